"""Load test of the perceptual study's voting page on 127.0.0.1, and synthetic votes for an example Table 4.

    python benchmarks/perceptual_load.py                                   # 20 participants x 100 groups = 2,000 votes
    python benchmarks/perceptual_load.py --run RUN_DIR --groups 60 --voter nearest   # synthetic votes on a run's study

The server is ``assocgan study perceptual`` in a process of its own. Without ``--run`` it serves a tiny run made
here in a temporary folder (smoke preset, 16 px, TL and JL, 25 test images a task: 100 groups). Each simulated
participant is a thread with its own keep-alive connection: it joins with its name, then fetches its next group
(``next.json``) and votes on it, until it has voted on every group; every tenth vote is sent a second time (a
double click), which must be refused (409). It stops by itself.

Checks, from the database directly once the server has stopped: as many rows as votes answered 200, each
(participant, group) once, every participant through every group, the answered votes exactly the recorded ones,
every second send refused. Prints votes per second over the whole load and the latency of a vote (median, p95,
max); exits 1 if a check fails.

Voters: ``random`` picks a position at random; ``nearest`` (a synthetic voter, not a person) picks the output
closest to the group's target (mean squared error) with probability ``--p-nearest``, otherwise one at random.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import itertools
import json
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from assocgan.perceptual.groups import load_groups
from assocgan.perceptual.votes import DB

TINY_RUN = [
    "--preset",
    "smoke",
    "--size",
    "16",
    "--steps",
    "2",
    "--n-train",
    "4",
    "--n-test",
    "25",
    "--batch-size",
    "2",
    "--threads",
    "1",
    "--methods",
    "tl,jl",
]


class Client:
    """One participant's browser: a keep-alive connection to the server."""

    def __init__(self, host: str, port: int):
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if r.getheader("Content-Type", "").startswith("application/json") else data)


def pick(voter: str, rng: random.Random, client: Client, nxt: dict, target: np.ndarray | None, p_nearest: float) -> int:
    """The position (1-based) a voter chooses in the group ``nxt``."""
    n = nxt["choices"]
    if voter == "random" or rng.random() >= p_nearest:
        return rng.randint(1, n)
    errors = []
    for url in nxt["images"]:
        status, png = client.call("GET", url)
        assert status == 200, url
        errors.append(float(((np.asarray(Image.open(io.BytesIO(png)), np.float32) - target) ** 2).mean()))
    return 1 + int(np.argmin(errors))


def participant(name: str, host: str, port: int, args, study, out: dict, lock: threading.Lock) -> None:
    try:
        vote_through(name, host, port, args, study, out, lock)
    except Exception as e:
        with lock:
            out["errors"].append(f"{name}: {type(e).__name__}: {e}")


def vote_through(name: str, host: str, port: int, args, study, out: dict, lock: threading.Lock) -> None:
    """One participant from joining to the last group."""
    client = Client(host, port)
    rng = random.Random(f"{args.seed}:{name}")
    status, joined = client.call("POST", "/start", {"name": name})
    assert status == 200, joined
    token = joined["token"]
    for k in itertools.count():
        status, nxt = client.call("GET", f"/p/{token}/next.json")
        assert status == 200, nxt
        if nxt["group"] is None:
            break
        target = None
        if args.voter == "nearest":
            target = np.asarray(Image.open(study.image_path(nxt["group"], "target")), np.float32)
        choice = pick(args.voter, rng, client, nxt, target, args.p_nearest)
        start = time.perf_counter()
        status, reply = client.call("POST", f"/p/{token}/vote", {"group": nxt["group"], "choice": choice})
        seconds = time.perf_counter() - start
        with lock:
            out["latency"].append(seconds)
            out["status"].append(status)
            if status == 200:
                out["answered"].append((name, nxt["group"]))
        if k % 10 == 9:  # a double click
            again, _ = client.call("POST", f"/p/{token}/vote", {"group": nxt["group"], "choice": choice})
            with lock:
                out["second"].append(again)


def start_server(run_dir: Path, args) -> tuple[subprocess.Popen, str, int]:
    cmd = [sys.executable, "-m", "assocgan.cli", "study", "perceptual", str(run_dir), "--port", "0", "--groups", str(args.groups)]
    if args.methods:
        cmd += ["--methods", args.methods]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print("  server:", line.rstrip())
        m = re.match(r"Open http://([\d.]+):(\d+)/", line)
        if m:
            return proc, m[1], int(m[2])
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def check(run_dir: Path, out: dict, names: list[str], n_groups: int) -> list[str]:
    """What went wrong, from the database directly (empty: nothing)."""
    db = sqlite3.connect(run_dir / "perceptual" / DB)
    rows = db.execute(
        f"SELECT p.name, v.group_id FROM votes v JOIN participants p ON p.id = v.participant WHERE p.name IN ({','.join('?' * len(names))})", names
    ).fetchall()
    db.close()
    problems = list(out["errors"])
    answered = out["answered"]
    if len(rows) != len(answered):
        problems.append(f"{len(rows)} rows for {len(answered)} votes answered 200")
    if len(set(rows)) != len(rows):
        problems.append(f"{len(rows) - len(set(rows))} (participant, group) pairs recorded twice")
    if set(rows) != set(answered):
        problems.append(f"answered but not recorded: {len(set(answered) - set(rows))}; recorded but not answered: {len(set(rows) - set(answered))}")
    for name in names:
        if sum(1 for n, _ in rows if n == name) != n_groups:
            problems.append(f"{name} has {sum(1 for n, _ in rows if n == name)} of {n_groups} groups")
    if any(s != 409 for s in out["second"]):
        problems.append(f"second sends answered {sorted(set(out['second']))}, not all 409")
    if any(s != 200 for s in out["status"]):
        problems.append(f"first sends answered {sorted(set(out['status']))}, not all 200")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run folder to vote on (default: a tiny run made in a temporary folder)")
    ap.add_argument("--participants", type=int, default=20)
    ap.add_argument("--groups", type=int, help="groups per participant (default: 100 on the tiny run, 60 on --run)")
    ap.add_argument("--methods", help="the study's methods (default: every complete method of the run)")
    ap.add_argument("--voter", choices=["random", "nearest"], default="random")
    ap.add_argument("--p-nearest", type=float, default=0.7, help="the nearest voter's probability of choosing the output closest to the target")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            run_dir = Path(args.run)
            args.groups = args.groups or 60
        else:
            from assocgan.cli import main as cli

            run_dir = Path(tmp) / "run"
            print(f"making a tiny run in {run_dir} ...")
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli(["run", *TINY_RUN, "--out", str(run_dir)]) == 0
            args.groups = args.groups or 100
        proc, host, port = start_server(run_dir, args)
        study = load_groups(run_dir)
        prefix = "synthetic" if args.run else "load"
        names = [f"{prefix}-{k + 1:02d}" for k in range(args.participants)]
        out: dict = {"latency": [], "status": [], "answered": [], "second": [], "errors": []}
        lock = threading.Lock()
        threads = [threading.Thread(target=participant, args=(name, host, port, args, study, out, lock)) for name in names]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        proc.send_signal(2)  # Ctrl-C: the server stops and says how many votes it holds
        print("  server:", proc.communicate(timeout=60)[0].strip())
        problems = check(run_dir, out, names, len(study.groups))
    lat = sorted(out["latency"])
    n = len(lat)
    p95 = lat[min(n - 1, int(round(0.95 * (n - 1))))]
    print(
        f"{args.participants} participants x {len(study.groups)} groups = {n} votes ({args.voter} voter) on 127.0.0.1, {len(out['second'])} of them sent twice"
    )
    print(
        f"  {n / seconds:.0f} votes/s over {seconds:.1f} s; vote latency median {1000 * statistics.median(lat):.1f} ms, "
        f"p95 {1000 * p95:.1f} ms, max {1000 * lat[-1]:.1f} ms"
    )
    if problems:
        print("  FAILED: " + "; ".join(problems))
        return 1
    print(
        f"  checked in the database: {len(out['answered'])} votes answered and recorded, none lost, none twice, every participant "
        f"through every group, every second send refused (409)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
