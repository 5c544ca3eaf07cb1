"""Data: built-in photos, degradations, tone filters, user folders, and the benchmarks built from them."""
