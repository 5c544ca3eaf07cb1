"""Runs that survive a kill: every method, killed by SIGKILL at random points in a real process and run again
until done, ends bit for bit where an uninterrupted run ends (scores, checkpoints, sample grids); complete
methods are skipped, ``--restart`` trains anew, and two runs cannot write one folder at once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from assocgan import load_generator
from assocgan.cli import main
from assocgan.data.benchmarks import load_benchmark
from assocgan.errors import UserError
from assocgan.evaluate import evaluate_task
from assocgan.methods import METHODS
from assocgan.runfolder import RunFolder

ARGS = ["--preset", "smoke", "--threads", "1", "--seed", "0", "--steps", "8", "--checkpoint-every", "2"]
COMPARED = ("matrix", "psnr", "ssim", "memory_bytes", "memory_by_task", "complete", "options")


def _main(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(argv))
    return code, buf.getvalue()


def _launch(out: Path, methods: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-c", "import sys; from assocgan.cli import main; sys.exit(main())", "run", *ARGS, "--methods", methods, "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _outputs(out: Path) -> dict:
    """What a run folder says about its methods, without timings: entries, checkpoint tensors, sample grids."""
    res = json.loads((out / "results.json").read_text())
    entries = {m: {k: e[k] for k in COMPARED} for m, e in res["methods"].items()}
    ckpts = {str(p.relative_to(out)): load_file(str(p)) for p in sorted((out / "checkpoints").rglob("*.safetensors"))}
    samples = {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "samples").rglob("*.png"))}
    return {"entries": entries, "checkpoints": ckpts, "samples": samples}


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_method_killed_at_random_points_resumes_bit_for_bit(tmp_path):
    methods = ",".join(METHODS)
    ref = tmp_path / "ref"
    code, printed = _main("run", *ARGS, "--methods", methods, "--out", str(ref))
    assert code == 0, printed
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    out = tmp_path / "killed"
    killed: list[str] = []  # the method training (its state saved at least once) when each kill came
    for attempt in range(3 * len(METHODS)):
        proc = _launch(out, methods)
        while proc.poll() is None:
            states = [p.stem for p in (out / "state").glob("[!.]*.pt")] if (out / "state").is_dir() else []
            fresh = [m for m in states if m not in killed]
            if fresh:
                time.sleep(rng.uniform(0.0, 0.4))  # a random moment of that method's training (or what follows it)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed.append(fresh[0])
                break
            time.sleep(0.01)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, f"seed {seed}: run ended with {proc.returncode}: {proc.stderr.read()}"
    assert proc.returncode == 0, f"seed {seed}: never finished"
    assert set(killed) == set(METHODS), f"seed {seed}: killed while training {killed}"
    want, got = _outputs(ref), _outputs(out)
    assert got["entries"] == want["entries"], f"seed {seed}"
    assert got["checkpoints"].keys() == want["checkpoints"].keys()
    for name in want["checkpoints"]:
        assert _same_tensors(got["checkpoints"][name], want["checkpoints"][name]), f"seed {seed}: {name}"
    assert got["samples"] == want["samples"], f"seed {seed}"
    assert not (out / "state").exists() or not any((out / "state").iterdir())  # states of complete methods are gone
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no half-written file is left
    log = (out / "log.txt").read_text()
    assert log.count("resumed at") >= len(METHODS) // 2, log
    # every method's saved generators answer as the run evaluated them
    bench = load_benchmark("restore4", size=32, n_train=16, n_test=4, seed=0)
    res = json.loads((out / "results.json").read_text())["methods"]
    for m in METHODS:
        G = load_generator(out, m, task="noise")
        assert evaluate_task(G, bench.tasks[0])["psnr"] == res[m]["psnr"][-1][0], m


def test_the_task_router_killed_at_random_points_resumes_bit_for_bit(tmp_path):
    """--router on: the router's mappers and classifier are in the saved state, so a killed run (often while the
    router trains after a task) ends with the same routed matrix and router accuracy, and the same generators."""
    methods, extra = "lora", ("--order", "1,2,3", "--router", "on")
    ref = tmp_path / "ref"
    code, printed = _main("run", *ARGS, "--methods", methods, "--out", str(ref), *extra)
    assert code == 0, printed
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    out = tmp_path / "killed"
    kills = 0
    for attempt in range(12):
        proc = _launch(out, methods, *extra)
        while proc.poll() is None:
            if (out / "state").is_dir() and any((out / "state").glob("[!.]*.pt")) and kills < 5:
                time.sleep(rng.uniform(0.0, 1.5))  # within the router's training after a task as often as not
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                break
            time.sleep(0.01)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0 and kills, f"seed {seed}: {proc.returncode} after {kills} kills"
    compared = ("routed", "router_accuracy", "memory_breakdown", *COMPARED)
    want, got = (json.loads((o / "results.json").read_text())["methods"] for o in (ref, out))
    for m in methods.split(","):
        assert {k: got[m][k] for k in compared} == {k: want[m][k] for k in compared}, f"seed {seed}: {m}"
    want_ckpt, got_ckpt = _outputs(ref)["checkpoints"], _outputs(out)["checkpoints"]
    assert got_ckpt.keys() == want_ckpt.keys() and all(_same_tensors(got_ckpt[k], want_ckpt[k]) for k in want_ckpt), f"seed {seed}"
    assert "resumed at" in (out / "log.txt").read_text()


def test_a_complete_method_is_skipped_and_restart_trains_it_again(tmp_path):
    out = tmp_path / "run"
    assert _main("run", *ARGS, "--methods", "tl", "--out", str(out))[0] == 0
    ckpt = out / "checkpoints" / "tl" / "task4_blur.safetensors"
    first = ckpt.stat().st_mtime_ns
    code, printed = _main("run", *ARGS, "--methods", "tl,jl", "--out", str(out))
    assert code == 0 and "tl: complete" in printed
    assert ckpt.stat().st_mtime_ns == first  # not trained again
    res = json.loads((out / "results.json").read_text())
    assert res["methods"]["tl"]["complete"] and res["methods"]["jl"]["complete"]
    assert len(res["provenance"]) == 2
    code, printed = _main("run", *ARGS, "--methods", "tl", "--restart", "--out", str(out))
    assert code == 0 and "tl: complete" not in printed
    assert ckpt.stat().st_mtime_ns != first
    again = json.loads((out / "results.json").read_text())
    assert again["methods"]["tl"]["matrix"] == res["methods"]["tl"]["matrix"]  # the same seed trains the same
    assert "jl" in again["methods"]  # --restart touches the methods it is given only


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    folder = RunFolder(out)
    with folder.lock():
        code = main(["run", *ARGS, "--methods", "tl", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "another run is writing to this folder" in err and f"pid {os.getpid()}" in err
        assert len(err.splitlines()) == 1
        with pytest.raises(UserError):
            with RunFolder(out).lock():
                pass
    assert not (out / "results.json").exists()
    with folder.lock():  # released: it can be taken again
        pass
    assert not (out / ".lock").exists()


def test_a_state_saved_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    folder = RunFolder(out)
    folder.save_state("tl", {"method": "tl", "settings": {"shared": {"lr": 1.0}, "options": {}}})
    code = main(["run", *ARGS, "--methods", "tl", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "state/tl.pt" in err and "--restart" in err
    (out / "state" / "tl.pt").write_bytes(b"not a state")
    code = main(["run", *ARGS, "--methods", "tl", "--out", str(out)])
    assert code == 2 and "not a training state this version can resume" in capsys.readouterr().err
    assert main(["run", *ARGS, "--methods", "tl", "--restart", "--out", str(out)]) == 0
    capsys.readouterr()
    assert not (out / "state" / "tl.pt").exists()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> tuple[Path, dict]:
    """A tl run killed in its second task, after a state was saved in the middle of it: the folder and that state."""
    out = tmp_path_factory.mktemp("killed") / "run"
    proc = _launch(out, "tl", "--steps", "40", "--checkpoint-every", "2")
    state_file = out / "state" / "tl.pt"
    deadline = time.time() + 120
    state = None
    while time.time() < deadline:
        if state_file.exists():
            with contextlib.suppress(UserError):
                state = RunFolder(out).load_state("tl")
            if state is not None and state["task"] == 1 and state["step"] > 0:
                break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert state is not None and state["task"] == 1 and state["step"] > 0
    return out, RunFolder(out).load_state("tl")


@pytest.mark.parametrize(
    "damage, named",
    [
        ({"task": 99}, "task 99"),
        ({"step": 10**6}, "step 1000000"),
        ({"global_step": 3}, "steps done"),
        ({"optimizers": []}, "'optimizers'"),
        ({"records": []}, "task records"),
        ({"G": None}, "'G' is missing"),
    ],
)
def test_a_damaged_state_that_still_unpickles_is_refused_in_one_line(killed_run, tmp_path, capsys, damage, named):
    import shutil

    src, state = killed_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    RunFolder(out).save_state("tl", {**{k: v for k, v in state.items() if k != "format"}, **damage})
    before = json.loads((out / "results.json").read_text())["methods"]
    code = main(["run", *ARGS, "--steps", "40", "--checkpoint-every", "2", "--methods", "tl", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "state/tl.pt: damaged" in err and named in err and "--restart" in err, err
    assert json.loads((out / "results.json").read_text())["methods"] == before  # nothing computed is lost
    assert (out / "state" / "tl.pt").exists()


def test_a_state_or_checkpoint_with_flipped_bits_is_refused(killed_run, tmp_path, capsys):
    import shutil

    src, _ = killed_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    data = bytearray((out / "state" / "tl.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    (out / "state" / "tl.pt").write_bytes(bytes(data))
    code = main(["run", *ARGS, "--steps", "40", "--checkpoint-every", "2", "--methods", "tl", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "do not match the digest" in err and len(err.splitlines()) == 1, err
    ckpt = next((out / "checkpoints" / "tl").glob("*.safetensors"))
    raw = bytearray(ckpt.read_bytes())
    raw[-5] ^= 0x01  # the last tensor's bytes
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="damaged: its tensors do not match the digest"):
        load_generator(out, "tl", after_task=1)


def test_one_generator_gives_one_checkpoint_file_byte_for_byte_in_any_process(tmp_path):
    """safetensors orders the metadata differently in each process; the file is written with its header's keys
    sorted, so two processes saving the same generator write the same bytes."""
    code = (
        "import sys, torch; from pathlib import Path; from assocgan.checkpoints import save_generator; "
        "torch.manual_seed(0); m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 1)); "
        "save_generator(Path(sys.argv[1]), m, {'method': 'tl', 'after_task': 1, 'task': 'a', 'tasks': ['a', 'b'], 'benchmark': 'x', "
        "'metric': 'psnr', 'needs_task_id': False, 'config': {'lr': 0.1, 'ngf': 4, 'seed': 0}})"
    )
    files = [tmp_path / f"g{i}.safetensors" for i in range(4)]
    for f in files:
        subprocess.run([sys.executable, "-c", code, str(f)], check=True)
    assert len({f.read_bytes() for f in files}) == 1
    tensors = load_file(str(files[0]))
    assert set(tensors) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_a_state_saved_before_a_setting_existed_resumes_with_what_it_meant(tmp_path):
    """A training state saved by a version without --metrics (which scored psnr and ssim) is the state of a run
    with the default --metrics: it resumes instead of being refused as made with other settings."""
    from assocgan.config import make_config, upgrade_saved
    from assocgan.runner import state_settings

    cfg = make_config("smoke")
    now = state_settings(cfg, {})
    older = {**now, "shared": {k: v for k, v in now["shared"].items() if k != "metrics"}}
    assert {**older, "shared": upgrade_saved(older["shared"])} == now
    other = state_settings(make_config("smoke", metrics="psnr"), {})
    assert {**older, "shared": upgrade_saved(older["shared"])} != other
