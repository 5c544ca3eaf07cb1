"""``--eval-full``: a user's test images scored at their own size, translated in blended tiles of the training size,
instead of centre crops resized to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from skimage import data as skdata

from assocgan.cli import main
from assocgan.data.benchmarks import load_benchmark
from assocgan.data.tasks import to_float
from assocgan.errors import UserError
from assocgan.evaluate import evaluate_task, identity_scores
from assocgan.metrics import Convention, scores
from assocgan.nets import UNet

S = 16
SIZES = [(37, 53), (16, 16), (45, 30)]  # odd sizes, not multiples of 16, one exactly the tile


def _folder(root: Path, sizes=SIZES) -> Path:
    """ROOT/fix/{train,test}/{A,B}: B a real photo crop, A the same darkened; test images of ``sizes``."""
    photo = skdata.astronaut()
    for split, shapes in (("train", [(S, S)] * 3), ("test", sizes)):
        for i, (h, w) in enumerate(shapes):
            b = photo[40 * i : 40 * i + h, 60 + 30 * i : 60 + 30 * i + w]
            a = (b * 0.6).astype(np.uint8)
            for side, img in (("A", a), ("B", b)):
                (root / "fix" / split / side).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img)).save(root / "fix" / split / side / f"im{i}.png")
    return root


def _native(root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(len(SIZES)):
        a, b = (torch.from_numpy(np.array(Image.open(root / "fix" / "test" / s / f"im{i}.png"))).permute(2, 0, 1) for s in "AB")
        out.append((a, b))
    return out


class Pointwise(nn.Module):
    """A per-pixel generator (its output at a pixel depends on that pixel alone), so tiling must not show."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 1.37 + 0.011).clamp(0, 1)  # no rounding ties at uint8 levels


def _direct(fn, pairs, conv) -> dict[str, float]:
    per = [scores(fn(to_float(a)[None]), to_float(b)[None], conv) for a, b in pairs]
    return {k: float(torch.cat([p[k] for p in per]).mean()) for k in ("psnr", "ssim")}


@pytest.mark.parametrize("conv", [Convention(), Convention(quantize=False, space="y", crop_border=2)])
def test_full_size_scores_are_those_of_the_untouched_images(tmp_path, conv):
    bench = load_benchmark(data=_folder(tmp_path), size=S, full_test=True)
    task = bench.tasks[0]
    pairs = _native(tmp_path)
    assert [tuple(a.shape[-2:]) for a, _ in task.full_test] == SIZES
    assert all(torch.equal(a, ta) and torch.equal(b, tb) for (a, b), (ta, tb) in zip(pairs, task.full_test))
    # doing nothing, an untrained (identity) U-Net and a per-pixel map: each equals the metric of the full images
    want = _direct(lambda x: x, pairs, conv)
    assert identity_scores(task, conv) == pytest.approx(want, abs=1e-9)
    assert evaluate_task(UNet(ngf=4), task, convention=conv) == pytest.approx(want, abs=1e-4)
    assert evaluate_task(Pointwise(), task, convention=conv) == pytest.approx(_direct(Pointwise(), pairs, conv), abs=1e-4)
    # ... and differ from the crop scores (which are of resized centre crops)
    crops = load_benchmark(data=tmp_path, size=S).tasks[0]
    assert crops.full_test is None
    assert identity_scores(crops, conv)["psnr"] != pytest.approx(want["psnr"], abs=1e-3)


def test_clean_images_get_each_whole_test_photo_degraded_once(tmp_path):
    photo = skdata.astronaut()
    for i in range(5):
        Image.fromarray(photo[50 * i : 50 * i + 40, 30 * i : 30 * i + 56].copy()).save(tmp_path / f"p{i}.png")
    bench = load_benchmark(clean_images=tmp_path, recipe="noise:0.1,blur:2", size=S, n_train=8, n_test=4, full_test=True)
    again = load_benchmark(clean_images=tmp_path, recipe="noise:0.1,blur:2", size=S, n_train=8, n_test=4, full_test=True)
    plain = load_benchmark(clean_images=tmp_path, recipe="noise:0.1,blur:2", size=S, n_train=8, n_test=4)
    for t, t2, tp in zip(bench.tasks, again.tasks, plain.tasks):
        assert len(t.full_test) == 1  # the last fifth of 5 photos
        x, y = t.full_test[0]
        assert x.shape == y.shape and min(y.shape[-2:]) >= S and not torch.equal(x, y)
        assert torch.equal(x, t2.full_test[0][0])  # made once from the seed
        assert torch.equal(t.train_x, tp.train_x) and torch.equal(t.test_x, tp.test_x)  # the crops are unchanged


def test_run_with_eval_full_scores_and_says_so(tmp_path):
    root = _folder(tmp_path / "data")
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--preset",
                "smoke",
                "--threads",
                "1",
                "--steps",
                "2",
                "--size",
                str(S),
                "--data",
                str(root),
                "--methods",
                "tl",
                "--eval-full",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["eval_full"] is True
    assert res["identity"]["psnr"][0] == pytest.approx(_direct(lambda x: x, _native(root), Convention())["psnr"], abs=1e-6)
    assert "at its own size" in (out / "report.html").read_text()


def test_eval_full_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(UserError, match="--eval-full: only for your own data"):
        load_benchmark("restore4", size=S, n_train=4, n_test=2, full_test=True)
    root = _folder(tmp_path, sizes=[(12, 40)])
    with pytest.raises(UserError, match=r"--eval-full: .*im0\.png is 40x12, smaller than --size 16"):
        load_benchmark(data=root, size=S, full_test=True)
    load_benchmark(data=root, size=S)  # without --eval-full the small image is fitted, as before
