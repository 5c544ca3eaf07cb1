#!/usr/bin/env bash
# The training loop's speed at two revisions of this repository, side by side: each method trained at the quick
# preset on restore4 (seed 0, one thread, --steps STEPS) by both revisions at the same time, one on each of two
# cores, twice; prints wall and process-CPU seconds per step and the final AVG (equal when the arithmetic is).
#
#   benchmarks/compare_revisions.sh OLD_REV [NEW_REV (default: the working tree)] [METHODS (default tl,assoc)] [STEPS (150)]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
old="${1:?give the earlier revision, e.g. a commit hash}"
new="${2:-}"
methods="${3:-tl,assoc}"
steps="${4:-150}"
py="${PYTHON:-$root/.venv/bin/python}"
work="$(mktemp -d)"
trap 'git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1 || true; [ -n "$new" ] && git -C "$root" worktree remove --force "$work/new" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/old" "$old"
if [ -n "$new" ]; then git -C "$root" worktree add -q --detach "$work/new" "$new"; newsrc="$work/new/src"; else newsrc="$root/src"; fi
for rep in 1 2; do
  for m in ${methods//,/ }; do
    echo "rep $rep: $m (both revisions at once)" >&2
    PYTHONPATH="$work/old/src" "$py" -m assocgan.cli run --preset quick --threads 1 --methods "$m" --steps "$steps" --seed 0 --out "$work/runs/old_${m}_$rep" >/dev/null 2>&1 &
    PYTHONPATH="$newsrc" "$py" -m assocgan.cli run --preset quick --threads 1 --methods "$m" --steps "$steps" --seed 0 --out "$work/runs/new_${m}_$rep" >/dev/null 2>&1 &
    wait
  done
done
"$py" - "$work/runs" "$methods" "$steps" "$old" "${new:-working tree}" <<'PY'
import json, sys
runs, methods, steps, old, new = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4], sys.argv[5]
print(f"{'method':8s} {'revision':>14s} {'wall s/step (x2)':>20s} {'CPU s/step (x2)':>20s} {'final AVG':>10s}")
for m in methods:
    means = {}
    for tag, rev in (("old", old), ("new", new)):
        es = [json.load(open(f"{runs}/{tag}_{m}_{rep}/results.json"))["methods"][m] for rep in (1, 2)]
        per = lambda k: [e[k] / (steps * len(e["matrix"])) for e in es]
        w, c = per("train_seconds"), per("train_cpu_seconds")
        means[tag] = sum(w) / 2
        print(f"{m:8s} {rev[:14]:>14s} {w[0]:9.4f} {w[1]:9.4f}  {c[0]:9.4f} {c[1]:9.4f}  {es[0]['final_avg']:10.3f}")
    print(f"{m:8s} {'new / old':>14s} {means['new'] / means['old']:9.3f}")
PY
