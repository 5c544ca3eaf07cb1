"""`assocgan run` end to end at the smoke preset: results.json, CSVs, checkpoints, sample grids, determinism;
evaluate.summarize, atomic writes, the listing commands and bad names."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from assocgan import io as aio
from assocgan.cli import main
from assocgan.data.benchmarks import load_benchmark
from assocgan.evaluate import evaluate_task, summarize
from assocgan.nets import UNet

METHODS = ("tl", "jl")
TASKS = ["noise", "impulse", "oversharpen", "blur"]
RUN = ["run", "--preset", "smoke", "--threads", "1", "--seed", "0"]


def _run(out: Path, *args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*RUN, "--out", str(out), *args])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("smoke") / "run"
    code, printed = _run(out, "--methods", "tl,jl")
    assert code == 0, printed
    return out, printed


@pytest.fixture(scope="module")
def results(run_dir) -> dict:
    return json.loads((run_dir[0] / "results.json").read_text())


@pytest.fixture(scope="module")
def bench():
    cfg_like = dict(size=32, n_train=16, n_test=4, seed=0)  # the smoke preset
    return load_benchmark("restore4", **cfg_like)


# ---------------------------------------------------------------------------------------------
# results.json


def test_results_json_structure(results, bench):
    from assocgan.config import PRESETS
    from assocgan.metrics import METRICS
    from assocgan.results import SCHEMA_VERSION

    assert results["schema_version"] == SCHEMA_VERSION
    assert results["benchmark"] == "restore4"
    assert results["metric"] == "psnr"
    assert results["tasks"] == TASKS
    assert list(results["methods"]) == list(METHODS)
    assert {k: results["config"][k] for k in PRESETS["smoke"]} == PRESETS["smoke"]  # the preset asked for
    # the floor every table shows: each task's test inputs scored against its targets, in both metrics
    for j, task in enumerate(bench.tasks):
        x, y = task.test_x.float() / 255, task.test_y.float() / 255
        for name in results["metrics"]:
            metric = METRICS[name]
            assert results["identity"][name][j] == pytest.approx(float(metric.function(x, y).mean()), abs=1e-5), (name, j)
    n = len(TASKS)
    for name, m in results["methods"].items():
        for key in ("matrix", "psnr", "ssim"):
            mat = m[key]
            assert len(mat) == n and all(len(row) == n for row in mat), (name, key)
            for i, row in enumerate(mat):  # row i holds the tasks seen after task i; their values are checked below
                assert [v is None for v in row] == [j > i for j in range(n)], (name, key, i)
        assert m["matrix"] == m["psnr"]  # restore4's metric
        assert m["psnr"] != m["ssim"]
        assert len(m["avg"]) == n
        for i, row in enumerate(m["matrix"]):
            assert m["avg"][i] == pytest.approx(sum(row[: i + 1]) / (i + 1), abs=1e-9)
        assert m["final_avg"] == pytest.approx(m["avg"][-1], abs=1e-12)
        s = summarize([row[: i + 1] for i, row in enumerate(m["matrix"])])
        assert m["bwt"] == pytest.approx(s["bwt"], abs=1e-9)
        assert m["forgetting"] == pytest.approx(s["forgetting"], abs=1e-9)
        mat = m["matrix"]
        bwt = sum(mat[n - 1][j] - mat[j][j] for j in range(n - 1)) / (n - 1)
        assert m["bwt"] == pytest.approx(bwt, abs=1e-9)
        assert m["forgetting"] >= -m["bwt"] - 1e-9  # the best score of a task is at least the one right after it (negative when the end is best)
        # the totals are the sums over the tasks, and the memory is what was kept after the last task
        assert m["train_seconds"] == pytest.approx(sum(m["train_seconds_by_task"])) and min(m["train_seconds_by_task"]) > 0
        assert m["memory_bytes"] == m["memory_by_task"][-1] == sum(m["memory_breakdown"].values())
        # the mean content loss of each task's steps, finite and positive
        assert len(m["losses_by_task"]) == n and all(0 < task_losses["content"] < 1 for task_losses in m["losses_by_task"])


def test_memory_bytes(results):
    per_task = 2 * 16 * 3 * 32 * 32  # n_train pairs of 3 x size x size uint8 images
    assert results["methods"]["jl"]["memory_bytes"] == len(TASKS) * per_task
    assert results["methods"]["tl"]["memory_bytes"] == 0


def test_json_is_strict(run_dir):
    text = (run_dir[0] / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_tables_are_printed(run_dir):
    printed = run_dir[1]
    for word in ("TL", "JL", "AVG", "BWT", "T1 noise", "T4 blur", "results.json"):
        assert word in printed, word


# ---------------------------------------------------------------------------------------------
# files of the run folder


def test_csvs_match_the_matrices(run_dir, results):
    out = run_dir[0]
    for name in METHODS:
        for metric in ("psnr", "ssim"):
            with open(out / "csv" / f"{name}_{metric}.csv", newline="") as f:
                rows = list(csv.reader(f))
            assert rows[0] == ["after_task"] + TASKS
            assert [r[0] for r in rows[1:]] == TASKS
            for i, r in enumerate(rows[1:]):
                for j, cell in enumerate(r[1:]):
                    want = results["methods"][name][metric][i][j]
                    if want is None:
                        assert cell == ""
                    else:
                        assert float(cell) == pytest.approx(want, abs=1e-5)


def test_checkpoints_per_task_reproduce_the_matrix(run_dir, results, bench):
    from safetensors.torch import load_file

    out = run_dir[0]
    cfg = results["config"]
    torch.set_num_threads(1)
    for name in METHODS:
        m = results["methods"][name]
        for t, task in enumerate(TASKS):
            path = out / "checkpoints" / name / f"task{t + 1}_{task}.safetensors"
            assert path.exists(), path
            G = UNet(3, 3, cfg["ngf"], norm=cfg["norm"], residual=cfg["residual"])
            G.load_state_dict(load_file(str(path)), strict=True)
            for j in range(t + 1):
                sc = evaluate_task(G, bench.tasks[j])
                assert sc["psnr"] == pytest.approx(m["psnr"][t][j], abs=1e-4), (name, t, j)
                assert sc["ssim"] == pytest.approx(m["ssim"][t][j], abs=1e-5), (name, t, j)
    # the checkpoints differ between tasks: training happened
    a = load_file(str(out / "checkpoints" / "tl" / "task1_noise.safetensors"))
    b = load_file(str(out / "checkpoints" / "tl" / "task4_blur.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_sample_grids_hold_input_output_target(run_dir, bench):
    out = run_dir[0]
    n, size, pad, gap, line, scale = 2, 32, 2, 12, 15, 2  # smoke: 2 sample images, 32 px, doubled because small; words 11 px
    s = size * scale
    block = n * (s + pad) - pad
    for name in METHODS:
        for t, task in enumerate(TASKS):
            path = out / "samples" / name / f"after_task{t + 1}_{task}.png"
            img = np.asarray(Image.open(path).convert("RGB"))
            row_h = line + s + line  # a task's label, its tiles, their scores
            assert img.shape == (line + 2 + (t + 1) * row_h + t * gap + pad, 3 * block + 2 * gap + 2 * pad, 3)
            for j in range(t + 1):
                x, y = bench.tasks[j].test_x, bench.tasks[j].test_y

                def tile(b, i, j=j):
                    top, left = line + 2 + j * (row_h + gap) + line, pad + b * (block + gap) + i * (s + pad)
                    return torch.from_numpy(img[top : top + s : scale, left : left + s : scale].copy()).permute(2, 0, 1)

                assert torch.equal(tile(0, 0), x[0]) and torch.equal(tile(0, 1), x[1])  # inputs
                assert torch.equal(tile(2, 0), y[0]) and torch.equal(tile(2, 1), y[1])  # targets
                assert not torch.equal(tile(1, 0), x[0])  # an output, not a copy of the input


def test_other_run_outputs(run_dir):
    out = run_dir[0]
    assert any((out / "tb").iterdir())
    assert (out / "report.html").exists()
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temp files left behind


# ---------------------------------------------------------------------------------------------
# tones3, determinism


def test_tones3_matrix_is_ssim(tmp_path):
    out = tmp_path / "tones"
    code, printed = _run(out, "--benchmark", "tones3", "--methods", "tl", "--steps", "2")
    assert code == 0, printed
    r = json.loads((out / "results.json").read_text())
    assert r["benchmark"] == "tones3" and r["metric"] == "ssim"
    assert r["tasks"] == ["sketch", "blueprint", "cartoon"]
    m = r["methods"]["tl"]
    assert m["matrix"] == m["ssim"] and m["matrix"] != m["psnr"]
    assert m["avg"][1] == pytest.approx((m["ssim"][1][0] + m["ssim"][1][1]) / 2, abs=1e-9)
    assert (out / "checkpoints" / "tl" / "task3_cartoon.safetensors").exists()


def test_same_seed_same_results(run_dir, results, tmp_path):
    out = tmp_path / "again"
    code, printed = _run(out, "--methods", "tl,jl")
    assert code == 0, printed
    again = json.loads((out / "results.json").read_text())
    for name in METHODS:
        a, b = results["methods"][name], again["methods"][name]
        for key in ("matrix", "psnr", "ssim", "avg", "bwt", "forgetting", "memory_bytes", "losses_by_task"):
            assert a[key] == b[key], (name, key)
    from safetensors.torch import load_file

    ca = load_file(str(run_dir[0] / "checkpoints" / "jl" / "task4_blur.safetensors"))
    cb = load_file(str(out / "checkpoints" / "jl" / "task4_blur.safetensors"))
    assert ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)


# ---------------------------------------------------------------------------------------------
# evaluate.summarize on hand-made matrices


def test_summarize_hand_made_matrix():
    R = [[10.0], [8.0, 20.0], [6.0, 15.0, 30.0]]
    s = summarize(R)
    assert s["avg"] == pytest.approx([10.0, 14.0, 17.0])
    assert s["final_avg"] == pytest.approx(17.0)
    assert s["bwt"] == pytest.approx(((6 - 10) + (15 - 20)) / 2)  # -4.5
    assert s["forgetting"] == pytest.approx(((10 - 6) + (20 - 15)) / 2)  # 4.5


def test_summarize_forgetting_uses_the_best_earlier_score():
    R = [[10.0], [12.0, 20.0], [9.0, 18.0, 30.0], [11.0, 19.0, 25.0, 40.0]]
    s = summarize(R)
    assert s["bwt"] == pytest.approx(((11 - 10) + (19 - 20) + (25 - 30)) / 3)
    assert s["forgetting"] == pytest.approx(((12 - 11) + (20 - 19) + (30 - 25)) / 3)
    assert s["avg"][3] == pytest.approx(95 / 4)
    # no forgetting at all: later scores only rise
    up = summarize([[10.0], [11.0, 20.0]])
    assert up["bwt"] == pytest.approx(1.0) and up["forgetting"] == pytest.approx(-1.0)


def test_summarize_single_task_and_rows_so_far():
    s = summarize([[25.0]])
    assert s["avg"] == [25.0] and s["bwt"] == 0.0 and s["forgetting"] == 0.0
    # a run stopped after two tasks: the measures over the tasks seen so far
    part = summarize([[10.0], [7.0, 20.0]])
    assert part["avg"] == pytest.approx([10.0, 13.5])
    assert part["bwt"] == pytest.approx(-3.0) and part["forgetting"] == pytest.approx(3.0)
    # rows that still hold the null entries of results.json are read up to the diagonal
    padded = summarize([[10.0, None, None], [7.0, 20.0, None], [6.0, 15.0, 30.0]])
    assert padded["avg"] == pytest.approx([10.0, 13.5, 17.0])
    assert padded["bwt"] == pytest.approx(-4.5)
    assert summarize([])["bwt"] is None


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_write_json_replaces_whole_files(tmp_path):
    p = tmp_path / "sub" / "results.json"
    aio.write_json(p, {"a": 1})
    aio.write_json(p, {"b": [1, 2]})
    assert json.loads(p.read_text()) == {"b": [1, 2]}
    assert aio.read_json(tmp_path / "missing.json", default={"x": 0}) == {"x": 0}


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    p = tmp_path / "results.json"
    aio.write_json(p, {"benchmark": "restore4", "methods": {"tl": {}}})
    before = p.read_bytes()

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text('{"benchmark": "resto')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        aio.atomic_write(p, half_then_fail)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["results.json"]  # the temp file is gone
    # a value JSON cannot hold (NaN) fails before anything is written
    with pytest.raises(ValueError):
        aio.write_json(p, {"bwt": float("nan")})
    assert p.read_bytes() == before

    class Interrupt(BaseException):
        pass

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise Interrupt

    with pytest.raises(Interrupt):
        aio.atomic_write(p, interrupted)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["results.json"]


# ---------------------------------------------------------------------------------------------
# listing commands and bad names


def test_benchmarks_command(capsys):
    assert main(["benchmarks"]) == 0
    text = capsys.readouterr().out
    assert "restore4 (PSNR)" in text and "tones3 (SSIM)" in text
    for task in TASKS + ["sketch", "blueprint", "cartoon"]:
        assert task in text
    for kind in ("blur", "noise", "jpeg", "downscale", "motion", "impulse", "oversharpen", "lowlight", "colorcast", "fade"):
        assert f"  {kind}" in text


def test_methods_command(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert starts[:2] == ["tl", "jl"]
    assert any("TL" in line and "lower bound" in line for line in lines)
    assert any("JL" in line and "upper bound" in line for line in lines)


@pytest.mark.parametrize("args,named", [(["--benchmark", "restore5"], "restore5"), (["--methods", "tl,nosuch"], "nosuch"), (["--methods", "tl,tl"], "twice")])
def test_unknown_names_exit_2(tmp_path, capsys, args, named):
    out = tmp_path / "out"
    code = main([*RUN, "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("assocgan: error: ") and named in err[0]
    assert not (out / "results.json").exists()  # nothing written for a run that cannot start


def test_unknown_preset_exit_2(tmp_path, capsys):
    assert main(["run", "--preset", "huge", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--preset" in err and len(err.splitlines()) == 1  # one line, not the usage
    assert main(["nosuchcommand"]) == 2


def test_fresh_degradations_flag(tmp_path, capsys):
    from assocgan.cli import main

    rc = main(["run", "--preset", "smoke", "--benchmark", "tones3", "--fresh-degradations", "--methods", "tl", "--out", str(tmp_path / "t3")])
    assert rc == 2 and "--fresh-degradations" in capsys.readouterr().err
    out = tmp_path / "r4"
    rc = main(["run", "--preset", "smoke", "--steps", "2", "--fresh-degradations", "--methods", "tl", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["fresh_degradations"] is True
    # a folder made with fixed pairs is not mixed with one made with fresh draws
    rc = main(["run", "--preset", "smoke", "--steps", "2", "--methods", "jl", "--out", str(out)])
    assert rc == 2 and "fresh_degradations" in capsys.readouterr().err


def test_lr_schedule_per_task():
    import torch

    from assocgan.config import make_config
    from assocgan.errors import UserError
    from assocgan.train import lr_schedule

    for schedule, end in (("cosine", 0.1), ("constant", 1.0)):
        cfg = make_config("smoke", steps=10, lr=1e-3, lr_schedule=schedule)
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched = lr_schedule(opt, cfg)
        lrs = []
        for _ in range(cfg.steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[0] == pytest.approx(1e-3)
        assert opt.param_groups[0]["lr"] == pytest.approx(end * 1e-3)
        assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(UserError, match="--lr-schedule"):
        make_config("smoke", lr_schedule="step")
