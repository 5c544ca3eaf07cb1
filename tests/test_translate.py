"""Trained models a user can apply: checkpoint metadata, ``assocgan.load_generator`` and ``assocgan translate``
reproduce the run's own test outputs and scores; tiling and padding to a multiple of 16; clear errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from safetensors import safe_open

import assocgan
from assocgan.cli import main
from assocgan.data.benchmarks import load_benchmark
from assocgan.evaluate import evaluate_task
from assocgan.translate import translate_padded, translate_tiled

METHODS = ("tl", "single", "piggyback-ti")  # piggyback-ti and single answer with the task identity
N = 2  # sample images per task at the smoke preset


def _main(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(argv))
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("translate") / "run"
    code, printed = _main("run", "--preset", "smoke", "--threads", "1", "--steps", "4", "--methods", ",".join(METHODS), "--out", str(out))
    assert code == 0, printed
    return out


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("restore4", size=32, n_train=16, n_test=4, seed=0)


def _grid_outputs(run: Path, method: str, k: int, task: str, j: int) -> np.ndarray:
    """The outputs of task j's first test images in the sample grid written after task k (tiles scaled 2x, under a
    header line and each row's label, scores under them; see imaging.labelled_grid)."""
    grid = np.asarray(Image.open(run / "samples" / method / f"after_task{k}_{task}.png"))
    pad, gap, line, s = 2, 12, 15, 64  # the gaps between images and between blocks, a line of words, a tile
    block = N * (s + pad) - pad
    top = line + 2 + j * (line + s + line + gap) + line
    left = pad + block + gap  # the outputs: the second block
    return np.stack([grid[top : top + s : 2, left + i * (s + pad) : left + i * (s + pad) + s : 2] for i in range(N)])


def test_checkpoints_carry_metadata(run):
    path = run / "checkpoints" / "piggyback-ti" / "task2_impulse.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items() if k not in ("format", "sha256")}
        assert f.metadata()["format"] == "assocgan-generator/1" and len(f.metadata()["sha256"]) == 64
    assert meta["method"] == "piggyback-ti" and meta["after_task"] == 2 and meta["task"] == "impulse"
    assert meta["tasks"] == ["noise", "impulse", "oversharpen", "blur"] and meta["needs_task_id"] is True
    assert meta["config"]["size"] == 32 and meta["config"]["ngf"] == 8 and meta["assocgan"] == assocgan.__version__


@pytest.mark.parametrize("method", METHODS)
def test_load_generator_reproduces_the_runs_scores(run, bench, method):
    res = json.loads((run / "results.json").read_text())["methods"][method]
    for k in (2, 4):
        for j in range(k):
            G = assocgan.load_generator(run, method, after_task=k, task=j + 1)
            assert not G.training and not any(p.requires_grad for p in G.parameters())
            assert evaluate_task(G, bench.tasks[j])["psnr"] == res["psnr"][k - 1][j], (method, k, j)


@pytest.mark.parametrize("method", METHODS)
def test_translate_reproduces_the_runs_test_outputs(run, bench, tmp_path, method):
    k = 4
    for j, task in enumerate(bench.tasks):
        inputs = tmp_path / f"in{j}"
        inputs.mkdir()
        for i, img in enumerate(task.test_x[:N]):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(inputs / f"img{i}.png")
        out = tmp_path / f"out{j}"
        extra = ["--task", task.name] if method != "tl" else []
        code, printed = _main("translate", str(run), str(inputs), "--method", method, "--out", str(out), *extra)
        assert code == 0 and "2 image(s) written" in printed
        got = np.stack([np.asarray(Image.open(out / f"img{i}.png")) for i in range(N)])
        assert np.array_equal(got, _grid_outputs(run, method, k, "blur", j)), (method, task.name)


def test_translate_modes_and_sizes(run, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(tmp_path / "odd.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "exact.png")
    outs = {}
    for mode in ("pad", "tile", "fit"):
        code, _ = _main(
            "translate", str(run), str(tmp_path / "odd.png"), str(tmp_path / "exact.png"), "--method", "tl", "--mode", mode, "--out", str(tmp_path / mode)
        )
        assert code == 0
        outs[mode] = {n: np.asarray(Image.open(tmp_path / mode / f"{n}.png")) for n in ("odd", "exact")}
    assert outs["pad"]["odd"].shape == outs["tile"]["odd"].shape == (37, 53, 3)
    assert outs["fit"]["odd"].shape == (32, 32, 3)
    # an image of the trained size is one tile: every mode gives the same
    assert np.array_equal(outs["pad"]["exact"], outs["tile"]["exact"]) and np.array_equal(outs["pad"]["exact"], outs["fit"]["exact"])
    assert not np.array_equal(outs["pad"]["odd"], outs["tile"]["odd"])  # tiles see less of the image than the whole


def test_tiles_blend_back_to_the_whole():
    """Through a per-pixel network, tiles overlapping and blended give exactly the untiled output."""
    x = torch.rand(1, 3, 45, 70)
    pointwise = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sigmoid())
    whole = translate_padded(pointwise, x)
    assert whole.shape == x.shape
    for tile in (16, 32, 64):
        assert torch.allclose(translate_tiled(pointwise, x, tile), whole, atol=1e-6), tile
    assert torch.allclose(translate_tiled(nn.Identity(), x, 16), x, atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "piggyback-ti"], "--task: piggyback-ti answers with the task's identity"),
        (["--method", "piggyback-ti", "--task", "blur", "--after-task", "2"], "--task 'blur': not one of 1 (noise), 2 (impulse)"),
        (["--method", "tl", "--after-task", "9"], "--after-task 9: not one of"),
        (["--method", "jl"], "no checkpoints of method 'jl' (this run has piggyback-ti, single, tl)"),
        ([], "--method: name the method to apply (piggyback-ti, single, tl)"),
        (["--method", "tl", "--tile", "20", "--mode", "tile"], "--tile 20: must be a positive multiple of 16"),
    ],
)
def test_translate_errors(run, tmp_path, capsys, args, message):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(["translate", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_translate_input_errors(run, tmp_path, capsys):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    for d in ("d1", "d2"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / d / "same.png")
    for inputs, message in (
        ([tmp_path / "missing.png"], "no such file or folder"),
        ([tmp_path / "d1", tmp_path / "d2"], "same same.png"),
        ([run / "csv"], "no images found"),
    ):
        code = main(["translate", str(run), *map(str, inputs), "--method", "tl", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err


def test_translate_never_overwrites_an_input_and_an_earlier_output_only_when_told(run, tmp_path, capsys):
    """``translate RUN imgs/ --out imgs/`` would write imgs/<name>.png over the inputs: refused, inputs intact;
    an output that exists already is replaced only with --overwrite; --task is refused for a method that
    answers every task with one generator (it would be ignored)."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(imgs / "a.png")
    before = (imgs / "a.png").read_bytes()
    for flags in ([], ["--overwrite"]):
        code = main(["translate", str(run), str(imgs), "--method", "tl", "--out", str(imgs), *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "would overwrite the input image" in err and len(err.splitlines()) == 1, err
        assert (imgs / "a.png").read_bytes() == before
    out = tmp_path / "out"
    assert main(["translate", str(run), str(imgs), "--method", "tl", "--out", str(out)]) == 0
    (out / "a.png").write_bytes(b"an earlier output")
    code = main(["translate", str(run), str(imgs), "--method", "tl", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "a.png" in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    assert (out / "a.png").read_bytes() == b"an earlier output"
    assert main(["translate", str(run), str(imgs), "--method", "tl", "--out", str(out), "--overwrite"]) == 0
    assert np.asarray(Image.open(out / "a.png")).shape == (16, 16, 3)
    code = main(["translate", str(run), str(imgs), "--method", "tl", "--task", "1", "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--task 1: tl answers every task with one generator" in err, err
    assert not (tmp_path / "o2").exists()
