"""A user's own data: paired A/B folders, aligned A|B images, clean images + recipe, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from assocgan.cli import main
from assocgan.data.benchmarks import load_benchmark
from assocgan.data.folders import fit
from assocgan.errors import UserError

S = 32


def _img(seed: int, h: int = S, w: int = S) -> np.ndarray:
    """A distinct real-photo crop, HxWx3 uint8."""
    photo = skdata.astronaut()
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 512 - h), rng.integers(0, 512 - w)
    return photo[top : top + h, left : left + w].copy()


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _ab_task(root: Path, task: str, n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict:
    """ROOT/<task>/{train,test}/{A,B}/<name>.png; B is a brighter A. Returns the arrays written."""
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys = [], []
        for i in range(n):
            a = _img(seed * 100 + i + (50 if split == "test" else 0))
            b = np.clip(a.astype(int) + 40, 0, 255).astype(np.uint8)
            _save(root / task / split / "A" / f"im{i}.png", a)
            _save(root / task / split / "B" / f"im{i}.png", b)
            xs.append(a)
            ys.append(b)
        written[split] = (np.stack(xs), np.stack(ys))
    return written


def _aligned_task(root: Path, task: str, n_train: int = 3, n_test: int = 2, seed: int = 7) -> dict:
    """pix2pix aligned: each image is A|B side by side. B is a darker A."""
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys = [], []
        for i in range(n):
            a = _img(seed * 100 + i + (50 if split == "test" else 0))
            b = (a // 2).astype(np.uint8)
            _save(root / task / split / f"p{i}.png", np.concatenate([a, b], axis=1))
            xs.append(a)
            ys.append(b)
        written[split] = (np.stack(xs), np.stack(ys))
    return written


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.transpose(0, 3, 1, 2).copy())


# ---------------------------------------------------------------------------------------------
# good data


def test_both_layouts_load_in_folder_name_order(tmp_path):
    root = tmp_path / "mydata"
    w_ab = _ab_task(root, "b_brighten")
    w_al = _aligned_task(root, "a_darken")
    bench = load_benchmark(data=root, size=S)
    assert bench.name == "mydata" and bench.metric == "psnr"
    assert bench.task_names == ["a_darken", "b_brighten"]  # folder-name order
    for task, written in zip(bench.tasks, (w_al, w_ab)):
        assert torch.equal(task.train_x, _chw(written["train"][0]))  # A is the source, B the target
        assert torch.equal(task.train_y, _chw(written["train"][1]))
        assert torch.equal(task.test_x, _chw(written["test"][0]))
        assert torch.equal(task.test_y, _chw(written["test"][1]))
        assert task.degrade is None
        # fixed pairs: drawing the same index twice gives the same pair
        gen = torch.Generator().manual_seed(0)
        x1, _ = task.pairs(torch.arange(2), gen)
        x2, _ = task.pairs(torch.arange(2), gen)
        assert torch.equal(x1, x2)
    assert load_benchmark(data=root, size=S, metric="ssim").metric == "ssim"
    assert load_benchmark(data=root, size=S, order="b_brighten,a_darken").task_names == ["b_brighten", "a_darken"]
    assert load_benchmark(data=root, size=S, order="2,1").task_names == ["b_brighten", "a_darken"]


def test_images_are_resized_and_centre_cropped(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "test"):
        a, b = _img(1, 48, 64), _img(2, 48, 64)
        _save(root / "t" / split / "A" / "x.png", a)
        _save(root / "t" / split / "B" / "x.png", b)
    bench = load_benchmark(data=root, size=S)
    task = bench.tasks[0]
    assert task.train_x.shape == (1, 3, S, S)
    assert torch.equal(task.train_x[0], torch.from_numpy(fit(a, S)))
    # fit keeps the centre: shorter side to S, then a centred S x S window
    ref = np.asarray(Image.fromarray(a).resize((round(64 * S / 48), S), Image.BICUBIC))
    left = (ref.shape[1] - S) // 2
    assert np.array_equal(fit(a, S).transpose(1, 2, 0), ref[:, left : left + S])


def test_clean_images_and_recipe(tmp_path, monkeypatch):
    from assocgan.data import photos

    monkeypatch.setattr(photos, "MAX_SCALE", 1.0)  # exact crops, so that each can be found in its image
    folder = tmp_path / "clean"
    imgs = [_img(i, 48, 48) for i in range(5)]
    for i, a in enumerate(imgs):
        _save(folder / f"c{i}.png", a)
    bench = load_benchmark(clean_images=folder, recipe="blur:1,noise:0.1+jpeg:50", size=S, n_train=6, n_test=3, seed=0)
    assert bench.name == "clean" and bench.metric == "psnr"
    assert bench.task_names == ["blur1", "noise0.1+jpeg50"]
    train_imgs, test_img = imgs[:4], imgs[4]  # the last fifth of the images is the test split

    def found_in(crop: np.ndarray, pool: list[np.ndarray]) -> bool:
        c = crop.transpose(1, 2, 0)
        return any(np.array_equal(p[t : t + S, l : l + S], c) for p in pool for t in range(p.shape[0] - S + 1) for l in range(p.shape[1] - S + 1))

    for task in bench.tasks:
        assert task.train_y.shape == (6, 3, S, S) and task.test_y.shape == (3, 3, S, S)
        assert all(found_in(c, train_imgs) and not found_in(c, [test_img]) for c in task.train_y.numpy())
        assert all(found_in(c, [test_img]) for c in task.test_y.numpy())
        assert not torch.equal(task.test_x, task.test_y)
    # seeded: the same crops and test inputs again
    again = load_benchmark(clean_images=folder, recipe="blur:1,noise:0.1+jpeg:50", size=S, n_train=6, n_test=3, seed=0)
    assert all(torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y) for a, b in zip(bench.tasks, again.tasks))


def test_small_clean_images_are_brought_to_size(tmp_path):
    folder = tmp_path / "small"
    for i in range(2):
        _save(folder / f"c{i}.jpg", _img(i, 20, 24))
    bench = load_benchmark(clean_images=folder, recipe="blur:1", size=S, n_train=2, n_test=1)
    assert bench.tasks[0].train_y.shape == (2, 3, S, S)


# ---------------------------------------------------------------------------------------------
# bad input: UserError naming the file or option


def _err(**kwargs) -> str:
    with pytest.raises(UserError) as e:
        load_benchmark(size=S, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_folders(tmp_path):
    assert str(tmp_path / "nope") in _err(data=tmp_path / "nope")
    root = tmp_path / "d"
    _ab_task(root, "t1")
    import shutil

    shutil.rmtree(root / "t1" / "test")
    msg = _err(data=root)
    assert str(root / "t1" / "test") in msg and "not found" in msg
    shutil.rmtree(root / "t1" / "train" / "B")
    msg = _err(data=root)
    assert str(root / "t1" / "train" / "B") in msg
    (tmp_path / "empty").mkdir()
    assert str(tmp_path / "empty") in _err(data=tmp_path / "empty")
    assert str(tmp_path / "nothere") in _err(clean_images=tmp_path / "nothere", recipe="blur:1")


def test_corrupt_image_is_named(tmp_path):
    root = tmp_path / "d"
    _ab_task(root, "t1")
    bad = root / "t1" / "train" / "A" / "im1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png at all" + bytes(range(40)))
    msg = _err(data=root)
    assert str(bad) in msg and "cannot read" in msg
    # a truncated file too
    _ab_task(tmp_path / "e", "t1")
    good = tmp_path / "e" / "t1" / "test" / "B" / "im0.png"
    good.write_bytes(good.read_bytes()[:60])
    assert str(good) in _err(data=tmp_path / "e")


def test_corrupt_clean_image_is_named(tmp_path):
    folder = tmp_path / "clean"
    for i in range(3):
        _save(folder / f"c{i}.png", _img(i, 40, 40))
    (folder / "c1.png").write_bytes(b"garbage" * 20)
    assert str(folder / "c1.png") in _err(clean_images=folder, recipe="blur:1")


def test_names_that_do_not_match(tmp_path):
    root = tmp_path / "d"
    _ab_task(root, "t1")
    (root / "t1" / "train" / "A" / "im2.png").rename(root / "t1" / "train" / "A" / "other.png")
    msg = _err(data=root)
    assert "other.png" in msg and str(root / "t1" / "train" / "A") in msg
    # a missing partner on the B side
    root2 = tmp_path / "d2"
    _ab_task(root2, "t1")
    (root2 / "t1" / "test" / "A" / "im1.png").unlink()
    msg = _err(data=root2)
    assert "im1.png" in msg and str(root2 / "t1" / "test" / "B") in msg


def test_sizes_that_do_not_match(tmp_path):
    root = tmp_path / "d"
    _ab_task(root, "t1")
    b = root / "t1" / "train" / "B" / "im0.png"
    _save(b, _img(3, 40, 40))
    msg = _err(data=root)
    assert str(b) in msg and "40x40" in msg and "32x32" in msg


def test_aligned_image_must_be_twice_as_wide(tmp_path):
    root = tmp_path / "d"
    _aligned_task(root, "t1")
    bad = _save(root / "t1" / "train" / "p1.png", _img(5, 32, 48))
    msg = _err(data=root)
    assert str(bad) in msg and "48x32" in msg
    odd = _save(root / "t1" / "train" / "p1.png", _img(5, 32, 65))
    assert str(odd) in _err(data=root)


def test_recipe_errors_with_clean_images(tmp_path):
    folder = tmp_path / "clean"
    for i in range(3):
        _save(folder / f"c{i}.png", _img(i, 40, 40))
    assert "sharpen" in _err(clean_images=folder, recipe="blur:1,sharpen:2")
    assert "--recipe" in _err(clean_images=folder)
    one = tmp_path / "one"
    _save(one / "c.png", _img(0, 40, 40))
    assert str(one) in _err(clean_images=one, recipe="blur:1")


# ---------------------------------------------------------------------------------------------
# through the CLI: exit code 2, one line on stderr, nothing already written lost


def _cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["run", "--preset", "smoke", "--threads", "1", *args])
    err = capsys.readouterr().err
    return code, err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("assocgan: error: ")
    return lines[0]


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    """Each bad input: (CLI arguments, what the message must name)."""
    cases = {}
    cases["missing"] = (["--data", str(tmp_path / "missing")], str(tmp_path / "missing"))
    r = tmp_path / "corrupt"
    _ab_task(r, "t1")
    (r / "t1" / "train" / "B" / "im0.png").write_bytes(b"not an image")
    cases["corrupt"] = (["--data", str(r)], str(r / "t1" / "train" / "B" / "im0.png"))
    r = tmp_path / "names"
    _ab_task(r, "t1")
    (r / "t1" / "test" / "B" / "im0.png").rename(r / "t1" / "test" / "B" / "zz.png")
    cases["names"] = (["--data", str(r)], "im0.png")  # A/im0.png lost its partner
    r = tmp_path / "sizes"
    _ab_task(r, "t1")
    _save(r / "t1" / "test" / "A" / "im1.png", _img(9, 48, 48))
    cases["sizes"] = (["--data", str(r)], "im1.png")
    r = tmp_path / "aligned"
    _aligned_task(r, "t1")
    _save(r / "t1" / "test" / "p0.png", _img(9, 32, 32))
    cases["aligned"] = (["--data", str(r)], str(r / "t1" / "test" / "p0.png"))
    c = tmp_path / "clean"
    for i in range(3):
        _save(c / f"c{i}.png", _img(i, 40, 40))
    cases["recipe"] = (["--clean-images", str(c), "--recipe", "blur:1,warp:3"], "warp")
    cases["order"] = (["--clean-images", str(c), "--recipe", "blur:1,noise:0.1", "--order", "blur1,nope"], "nope")
    return cases


@pytest.mark.parametrize("case", ["missing", "corrupt", "names", "sizes", "aligned", "recipe", "order"])
def test_cli_bad_input_exit_2_and_keeps_results(tmp_path, capsys, bad_inputs, case):
    args, named = bad_inputs[case]
    out = tmp_path / "out"
    out.mkdir()
    old = {"benchmark": "earlier", "metric": "psnr", "tasks": ["a"], "methods": {"tl": {"matrix": [[20.5]]}}}
    old_bytes = (json.dumps(old, indent=2) + "\n").encode()
    (out / "results.json").write_bytes(old_bytes)
    code, err = _cli(capsys, *args, "--out", str(out))
    assert code == 2
    line = _one_line_error(err)
    assert named in line
    assert (out / "results.json").read_bytes() == old_bytes
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # nothing else written, no temp files


def test_cli_refuses_a_results_file_of_another_run(tmp_path, capsys):
    root = tmp_path / "d"
    _ab_task(root, "t1", n_train=2, n_test=1)
    out = tmp_path / "out"
    out.mkdir()
    other = '{"benchmark": "restore4", "tasks": ["noise", "blur", "lowlight", "colorcast"], "methods": {"tl": {}}}\n'
    (out / "results.json").write_text(other)
    code, err = _cli(capsys, "--data", str(root), "--out", str(out))
    assert code == 2
    assert str(out / "results.json") in _one_line_error(err)
    assert (out / "results.json").read_text() == other
    # an unreadable results.json is not overwritten either
    (out / "results.json").write_text("{not json")
    code, err = _cli(capsys, "--data", str(root), "--out", str(out))
    assert code == 2 and "results.json" in _one_line_error(err)
    assert (out / "results.json").read_text() == "{not json"


def test_cli_failing_method_keeps_earlier_methods(tmp_path, capsys, monkeypatch):
    """A run that fails after it started keeps the methods an earlier run wrote to the same folder."""
    import assocgan.runner as runner

    root = tmp_path / "d"
    _ab_task(root, "t1", n_train=2, n_test=1)
    _aligned_task(root, "t2", n_train=2, n_test=1)
    out = tmp_path / "out"
    code, _ = _cli(capsys, "--data", str(root), "--methods", "tl", "--steps", "1", "--out", str(out))
    assert code == 0
    first = json.loads((out / "results.json").read_text())
    assert first["tasks"] == ["t1", "t2"] and list(first["methods"]) == ["tl"]

    def boom(*args, **kwargs):
        raise runner.UserError("--jl-something: simulated failure")

    monkeypatch.setattr(runner, "train_method", boom)
    code, err = _cli(capsys, "--data", str(root), "--methods", "jl", "--steps", "1", "--out", str(out))
    assert code == 2 and "simulated failure" in _one_line_error(err)
    after = json.loads((out / "results.json").read_text())
    assert after["methods"]["tl"] == first["methods"]["tl"]
    assert (out / "checkpoints" / "tl" / "task2_t2.safetensors").exists()
