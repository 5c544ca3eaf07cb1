"""Runs that survive a kill, at the benchmark preset: each method is trained once without interruption and once
in a real process killed by SIGKILL at random moments and run again (the same command) until it finishes;
then the two run folders are compared: every score of results.json, every checkpoint tensor and every sample
grid. Prints, per method, the kills, the resumed positions, the seconds each way and "identical" or what differs.

    python benchmarks/resume.py                                  # tl,assoc,replay at the quick preset
    python benchmarks/resume.py --methods tl --preset smoke --kills 3 --out runs/bench/resume

The uninterrupted runs are OUT/reference (complete methods there are not trained again), the killed ones
OUT/killed (started afresh each time). Exit code 1 if a method differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

COMPARED = ("matrix", "psnr", "ssim", "memory_bytes", "memory_by_task", "complete")


def command(args, method: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from assocgan.cli import main; sys.exit(main())",
        "run",
        "--preset",
        args.preset,
        "--benchmark",
        args.benchmark,
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--methods",
        method,
        "--out",
        str(out),
    ]


def environment(args) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))


def killed_run(args, method: str, out: Path, rng: random.Random, expected_seconds: float) -> tuple[int, list[str], float]:
    """Run ``method`` into ``out``, killing it ``args.kills`` times at random moments of its expected duration;
    returns (the kills, the positions it resumed from, wall seconds in all)."""
    kills, start = 0, time.perf_counter()
    while True:
        proc = subprocess.Popen(command(args, method, out), env=environment(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills < args.kills:
            try:
                proc.wait(timeout=rng.uniform(0.1, 1.0) * expected_seconds / args.kills + 5)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        else:
            proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"{method}: the run into {out} ended with code {proc.returncode}: {proc.stderr.read().strip()}")
        log = (out / "log.txt").read_text(encoding="utf-8")
        resumed = [line.split("resumed at ", 1)[1] for line in log.splitlines() if f"{method}: resumed at " in line]
        return kills, resumed, time.perf_counter() - start


def differences(ref: Path, got: Path, method: str) -> list[str]:
    import torch
    from safetensors.torch import load_file

    out = []
    a = json.loads((ref / "results.json").read_text())["methods"][method]
    b = json.loads((got / "results.json").read_text())["methods"][method]
    out += [f"results.json {k}" for k in COMPARED if a.get(k) != b.get(k)]
    for sub, suffix in (("checkpoints", ".safetensors"), ("samples", ".png")):
        files_a = sorted(p.relative_to(ref) for p in (ref / sub / method).glob(f"*{suffix}"))
        files_b = sorted(p.relative_to(got) for p in (got / sub / method).glob(f"*{suffix}"))
        if files_a != files_b:
            out.append(f"{sub}: {len(files_a)} files against {len(files_b)}")
            continue
        for f in files_a:
            if suffix == ".png":
                same = (ref / f).read_bytes() == (got / f).read_bytes()
            else:
                ta, tb = load_file(str(ref / f)), load_file(str(got / f))
                same = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
            if not same:
                out.append(str(f))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="tl,assoc,replay")
    p.add_argument("--benchmark", default="restore4")
    p.add_argument("--preset", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kills", type=int, default=3, help="kills per method")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--random-seed", type=int, default=None, help="of the kill moments (default: drawn, and printed)")
    p.add_argument("--out", default="runs/bench/resume")
    args = p.parse_args()
    seed = args.random_seed if args.random_seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    out = Path(args.out)
    print(
        f"kill moments from random seed {seed}; {args.preset} preset, {args.benchmark}, {args.threads} threads, state saved every {args.checkpoint_every} steps"
    )
    rows, failed = [], False
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        ref = out / "reference"
        start = time.perf_counter()
        done = subprocess.run(command(args, method, ref), env=environment(args), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{method}: the reference run ended with code {done.returncode}: {done.stderr.strip()}")
        ref_seconds = time.perf_counter() - start
        trained = json.loads((ref / "results.json").read_text())["methods"][method]["train_seconds"]
        got = out / "killed" / method
        shutil.rmtree(got, ignore_errors=True)
        kills, resumed, seconds = killed_run(args, method, got, rng, max(trained, 1.0))
        diff = differences(ref, got, method)
        failed |= bool(diff)
        rows.append((method, kills, "; ".join(resumed) or "-", ref_seconds, seconds, "identical" if not diff else "DIFFERENT: " + ", ".join(diff[:5])))
        print(f"  {method}: done", flush=True)
    w = max(len(r[2]) for r in rows)
    print(f"\n{'method':<10} {'kills':>5}  {'resumed at':<{w}}  {'uninterrupted s':>15}  {'killed s':>8}  result")
    for method, kills, resumed, a, b, verdict in rows:
        print(f"{method:<10} {kills:>5}  {resumed:<{w}}  {a:>15.0f}  {b:>8.0f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
