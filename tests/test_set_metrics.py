"""FID and KID as metrics of a run (``--metrics ...,fid,kid``): one value per task from the InceptionV3 features of
all its test outputs against those of all its targets, the targets' features computed once a task; lower is better
everywhere; missing weights fail in one line before training; a small test split is warned about. The weights are
stand-ins: pytorch-fid's keys and shapes, He-initialised convolutions (so that activations keep their scale through
the network), saved under the file name the metric looks for."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from assocgan.cli import main
from assocgan.data.tasks import Task, to_float
from assocgan.deepmetrics import FIDInception, fid, kernel_inception_distance
from assocgan.deepmetrics.sets import inception_features
from assocgan.errors import UserError
from assocgan.evaluate import evaluate_task, identity_scores, summarize
from assocgan.inference import predict
from assocgan.metrics import METRICS, Convention, get_metric, scores, set_metric_warnings
from assocgan.samples import caption_metric

FILE = "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("fid-weights")
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in FIDInception(load=False).state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("conv.weight"):
            v = torch.randn(v.shape, generator=g) * (2 / v[0].numel()) ** 0.5
        state[k] = v
    torch.save(state, d / FILE)
    return d


def make_task(n: int = 5, size: int = 24, seed: int = 0, same: bool = False) -> Task:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    x = y.clone() if same else (y.float() * 0.5 + 40).round().to(torch.uint8)
    return Task("t", x, y, x.clone(), y.clone())


def direct_features(weights, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return FIDInception(weights)(images.float()).double().numpy()


def test_fid_and_kid_are_registered_as_lower_is_better_set_metrics():
    for name in ("fid", "kid"):
        m = get_metric(name)
        assert not m.per_image and m.needs_weights and not m.higher_is_better
        assert m.gain(1.0, 2.0) > 0  # lower is better
    s = summarize([[10.0], [30.0, 12.0]], metric="fid")  # task 1 went from FID 10 to 30: forgotten
    assert s["bwt"] == pytest.approx(-20.0) and s["forgetting"] == pytest.approx(20.0)
    assert all(METRICS[n].per_image for n in ("psnr", "ssim", "lpips-alex", "lpips-vgg", "dists"))


def test_outputs_equal_to_targets_are_at_fid_zero(weights):
    conv = Convention(metrics=("psnr", "fid", "kid"), weights_dir=str(weights))
    same = identity_scores(make_task(same=True), conv)
    other = identity_scores(make_task(), conv)
    assert list(same) == ["psnr", "fid", "kid"]
    assert other["fid"] > 1e-3 and abs(same["fid"]) < 1e-9 * max(1.0, other["fid"])
    # KID, unbiased, is not 0 for a set against itself but -(2/m)(mean diagonal - mean off-diagonal kernel): small
    assert other["kid"] > 0 and abs(same["kid"]) < other["kid"] / 10


def test_a_tasks_fid_is_that_of_its_outputs_features_against_its_targets(weights):
    """evaluate_task's FID and KID equal ``fid`` and ``kernel_inception_distance`` of the features computed here,
    from the generator's outputs (rounded to uint8, the run's convention) and the targets."""
    task = make_task(n=6, seed=1)
    model = nn.Conv2d(3, 3, 3, padding=1)
    torch.manual_seed(0)
    nn.init.normal_(model.weight, std=0.2)
    conv = Convention(metrics=("fid", "kid"), weights_dir=str(weights))
    got = evaluate_task(model, task, convention=conv)
    x, y = task.test_pairs()
    out = conv.prepare(predict(model, x))
    fo, ft = direct_features(weights, out), direct_features(weights, conv.prepare(y))
    assert got["fid"] == pytest.approx(fid(fo, ft), rel=1e-5)
    assert got["kid"] == pytest.approx(kernel_inception_distance(fo, ft)[0], rel=1e-4, abs=1e-9)
    assert got["fid"] != pytest.approx(fid(direct_features(weights, conv.prepare(x)), ft), rel=1e-3)  # not the inputs'


def test_full_size_test_images_of_different_sizes_are_each_resized(weights):
    """``--eval-full``: the pairs at their own sizes, each resized to 299 by the network, scored as one set."""
    g = torch.Generator().manual_seed(2)
    inputs = [torch.randint(0, 256, (3, s, s + 4), generator=g, dtype=torch.uint8) for s in (20, 28, 36)]
    pairs = [(x, (x.float() * 0.7).to(torch.uint8)) for x in inputs]
    task = make_task(n=3, size=16, seed=2)
    task.full_test = pairs
    conv = Convention(metrics=("psnr", "fid"), weights_dir=str(weights))
    got = identity_scores(task, conv)
    fx = np.concatenate([direct_features(weights, conv.prepare(to_float(x)[None])) for x, _ in pairs])
    fy = np.concatenate([direct_features(weights, conv.prepare(to_float(y)[None])) for _, y in pairs])
    assert got["fid"] == pytest.approx(fid(fx, fy), rel=1e-5)
    assert got["psnr"] == pytest.approx(float(np.mean([float(scores(to_float(x)[None], to_float(y)[None], conv)["psnr"]) for x, y in pairs])))


def test_the_targets_features_are_computed_once_a_task(weights):
    task = make_task(n=4, seed=3)
    conv = Convention(metrics=("fid", "kid"), weights_dir=str(weights))
    feats = inception_features(str(weights))
    model = nn.Conv2d(3, 3, 1)
    evaluate_task(model, task, convention=conv)  # the targets' features, if not yet cached, and the outputs'
    before = feats.computed
    first = evaluate_task(model, task, convention=conv)
    assert feats.computed - before == 4  # the outputs alone, once for both FID and KID
    assert evaluate_task(model, task, convention=conv) == first
    before = feats.computed
    evaluate_task(model, make_task(n=4, seed=5), convention=conv)  # other targets of the same shape: their own features
    assert feats.computed - before == 8


def test_one_channel_is_repeated_to_three(weights):
    feats = inception_features(str(weights))
    y = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(4))
    assert np.allclose(feats(y), feats(y.expand(-1, 3, -1, -1)))


def test_small_test_splits_are_warned_about_and_too_small_ones_refused():
    (w,) = set_metric_warnings(("psnr", "fid"), 4)
    assert "4 test images" in w and "KID" in w and "--metrics kid" in w and "\n" not in w
    assert set_metric_warnings(("psnr", "kid", "lpips-alex"), 4) == []
    assert set_metric_warnings(("fid",), 6000) == []
    with pytest.raises(UserError, match="--metrics kid.*at least 2.*1"):
        set_metric_warnings(("psnr", "kid"), 1)


def test_images_are_labelled_in_a_per_image_metric():
    assert caption_metric("fid", Convention(metrics=("fid", "psnr", "kid"))) == "psnr"
    assert caption_metric("ssim", Convention(metrics=("fid", "psnr", "ssim"))) == "ssim"
    assert caption_metric("kid", Convention(metrics=("fid", "kid"))) is None
    assert set(scores(torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16), Convention(metrics=("psnr", "fid")))) == {"psnr"}


SMOKE = ["run", "--preset", "smoke", "--benchmark", "restore4", "--order", "1,2", "--methods", "tl", "--threads", "1", "--tensorboard", "off"]


def test_a_run_scores_fid_and_kid(weights, tmp_path, capsys):
    """``--metric fid --metrics psnr,fid,kid``: a FID and a KID matrix per method, their CSVs, the report and its
    summaries in FID (lower is better: BWT is R[j][j] - R[T-1][j]); the small test split is warned about before
    training, in one line."""
    out = tmp_path / "run"
    assert main([*SMOKE, "--metric", "fid", "--metrics", "psnr,fid,kid", "--weights-dir", str(weights), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "--metrics fid" in line]
    assert len(warnings) == 1 and "the tasks have 4 test images" in warnings[0] and "KID" in warnings[0]
    res = json.loads((out / "results.json").read_text())
    assert res["metric"] == "fid" and res["metrics"] == ["psnr", "fid", "kid"]
    tl = res["methods"]["tl"]
    for m in ("fid", "kid"):
        scored = [tl[m][0][0], *tl[m][1]]  # R[0][0], then every task after the last
        assert len(tl[m]) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in scored), m
        assert len(res["identity"][m]) == 2 and res["identity"][m][0] > 0
        assert (out / "csv" / f"tl_{m}.csv").is_file()
    assert tl["matrix"] == tl["fid"]
    assert tl["bwt"] == pytest.approx(tl["fid"][0][0] - tl["fid"][1][0])
    page = (out / "report.html").read_text()
    assert "the same in KID" in page and "the same in PSNR" in page and "FID" in page
    assert (out / "plots" / "forgetting_kid.png").is_file()
    assert any((out / "samples" / "tl").iterdir())


def test_missing_weights_fail_in_one_line_before_training(tmp_path, capsys):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    out = tmp_path / "run"
    assert main([*SMOKE, "--metrics", "psnr,kid", "--weights-dir", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and FILE in err and f"--weights-dir {empty}" in err
    assert not out.exists()  # refused before the run folder is made, let alone any training
