"""Reporting: tables (terminal, Markdown, HTML), plots and the HTML report, all from results.json."""
