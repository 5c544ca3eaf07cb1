"""assocgan.metrics.psnr / ssim against scikit-image on real photo crops, one value per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage import filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from assocgan.metrics import METRICS, Convention, noise_sigma, psnr, ssim


def _photo_crops(h: int = 48, w: int = 64) -> np.ndarray:
    """Crops of three real photos, (N, H, W, 3) float64 in [0, 1]."""
    crops = [
        skdata.astronaut()[60 : 60 + h, 200 : 200 + w],
        skdata.coffee()[100 : 100 + h, 300 : 300 + w],
        skdata.chelsea()[80 : 80 + h, 150 : 150 + w],
        skdata.rocket()[200 : 200 + h, 250 : 250 + w],
    ]
    return np.stack(crops).astype(np.float64) / 255


def _distorted(y: np.ndarray) -> np.ndarray:
    """A different distortion for each image, so that per-image values differ widely."""
    rng = np.random.default_rng(0)
    out = [
        np.clip(y[0] + rng.normal(0, 0.03, y[0].shape), 0, 1),  # mild noise
        filters.gaussian(y[1], sigma=1.5, channel_axis=-1),  # blur
        np.clip(filters.gaussian(y[2], sigma=0.8, channel_axis=-1) + rng.normal(0, 0.12, y[2].shape), 0, 1),  # blur + strong noise
        np.clip(0.6 * y[3] ** 1.3 + 0.02, 0, 1),  # tone change
    ]
    return np.stack(out)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """Back to (N, H, W, C) float64 with the exact float32 values the metric saw."""
    return t.permute(0, 2, 3, 1).double().numpy()


@pytest.fixture(scope="module")
def pair():
    y = _photo_crops()
    x = _distorted(y)
    return _to_tensor(x), _to_tensor(y)


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)


def test_psnr_matches_skimage_per_image(pair):
    x, y = pair
    got = psnr(x, y)
    assert got.shape == (x.shape[0],)
    xs, ys = _to_numpy(x), _to_numpy(y)
    want = [peak_signal_noise_ratio(ys[i], xs[i], data_range=1) for i in range(len(xs))]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)
    # the images really differ in quality: a batch mean returned for every image would fail above
    assert max(want) - min(want) > 3


def test_ssim_matches_skimage_per_image(pair):
    x, y = pair
    got = ssim(x, y)
    assert got.shape == (x.shape[0],)
    xs, ys = _to_numpy(x), _to_numpy(y)
    want = [_sk_ssim(xs[i], ys[i]) for i in range(len(xs))]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)
    assert max(want) - min(want) > 0.2


def test_ssim_is_symmetric_and_follows_batch_order(pair):
    x, y = pair
    np.testing.assert_allclose(ssim(x, y).numpy(), ssim(y, x).numpy(), atol=1e-6)
    perm = torch.tensor([2, 0, 3, 1])
    np.testing.assert_allclose(ssim(x[perm], y[perm]).numpy(), ssim(x, y)[perm].numpy(), atol=1e-6)
    np.testing.assert_allclose(psnr(x[perm], y[perm]).numpy(), psnr(x, y)[perm].numpy(), atol=1e-5)


def test_ssim_single_channel_and_square_images():
    y = _photo_crops(32, 32)
    x = _distorted(y)
    # grey (C=1) images: one channel
    xg, yg = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    tx, ty = _to_tensor(xg), _to_tensor(yg)
    want = [_sk_ssim(_to_numpy(tx)[i], _to_numpy(ty)[i]) for i in range(len(xg))]
    np.testing.assert_allclose(ssim(tx, ty).numpy(), want, atol=1e-4, rtol=0)
    want_p = [peak_signal_noise_ratio(_to_numpy(ty)[i], _to_numpy(tx)[i], data_range=1) for i in range(len(xg))]
    np.testing.assert_allclose(psnr(tx, ty).numpy(), want_p, atol=1e-4, rtol=0)


def test_smallest_ssim_size_matches_skimage():
    y = _photo_crops(11, 11)
    x = _distorted(y)
    tx, ty = _to_tensor(x), _to_tensor(y)
    want = [_sk_ssim(_to_numpy(tx)[i], _to_numpy(ty)[i]) for i in range(len(x))]
    np.testing.assert_allclose(ssim(tx, ty).numpy(), want, atol=1e-4, rtol=0)


def test_identical_images():
    y = _to_tensor(_photo_crops(16, 16))
    assert torch.allclose(ssim(y, y), torch.ones(len(y)), atol=1e-6)
    p = psnr(y, y)
    assert torch.isfinite(p).all() and (p >= 99).all()


def test_worse_distortion_scores_lower():
    y = _photo_crops(32, 32)[:1]
    rng = np.random.default_rng(1)
    scores = []
    for sigma in (0.02, 0.08, 0.2):
        x = np.clip(y + rng.normal(0, sigma, y.shape), 0, 1)
        scores.append((float(psnr(_to_tensor(x), _to_tensor(y))), float(ssim(_to_tensor(x), _to_tensor(y)))))
    assert scores[0][0] > scores[1][0] > scores[2][0]
    assert scores[0][1] > scores[1][1] > scores[2][1]


def test_registry_names_both_metrics_and_evaluation_reports_each_by_its_name():
    """Every score of a run is one of METRICS by its name: evaluation gives, for each name, that function's mean
    over the task's test pairs (a swap of the two, here or in the registry, fails), and each built-in
    benchmark's metric is one of them."""
    from assocgan.data.benchmarks import BUILTIN, load_benchmark
    from assocgan.evaluate import evaluate_task, identity_scores, predict
    from assocgan.nets import UNet

    assert METRICS["psnr"].function is psnr and METRICS["ssim"].function is ssim  # the functions checked against scikit-image above
    assert {spec.metric for spec in BUILTIN.values()} == {"psnr", "ssim"}
    task = load_benchmark("restore4", size=32, n_train=2, n_test=3, seed=0).tasks[1]
    x, y = task.test_pairs()
    torch.manual_seed(0)
    G = UNet(3, 3, 4, residual=False)  # an untrained network: outputs far from the inputs
    out = predict(G, x)
    raw = Convention(quantize=False)  # the metric functions on the outputs as they are (the rounding is tested apart)
    scores, floor = evaluate_task(G, task, convention=raw), identity_scores(task, raw)
    assert set(scores) == set(floor) == {"psnr", "ssim"}  # the metrics a run scores by default (--metrics)
    for name, metric in ((n, METRICS[n]) for n in ("psnr", "ssim")):
        assert scores[name] == pytest.approx(float(metric.function(out, y).mean()), abs=1e-6), name
        assert floor[name] == pytest.approx(float(metric.function(x, y).mean()), abs=1e-6), name
    assert abs(scores["psnr"] - scores["ssim"]) > 1 and abs(floor["psnr"] - floor["ssim"]) > 1


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_shape_errors(fn):
    a = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError):
        fn(a, torch.rand(2, 3, 16, 17))  # different sizes
    with pytest.raises(ValueError):
        fn(a, torch.rand(1, 3, 16, 16))  # different batch
    with pytest.raises(ValueError):
        fn(a, torch.rand(2, 1, 16, 16))  # different channels
    with pytest.raises(ValueError):
        fn(a[0], a[0].clone())  # (C, H, W): not a batch


def test_ssim_rejects_images_smaller_than_its_window():
    a = torch.rand(1, 3, 10, 32)
    with pytest.raises(ValueError, match="11"):
        ssim(a, a.clone())


def test_noise_sigma_measures_white_noise_on_real_photos():
    img = torch.from_numpy(skdata.astronaut()[::2, ::2].copy()).permute(2, 0, 1)[None].float() / 255
    gen = torch.Generator().manual_seed(0)
    base = float(noise_sigma(img))
    assert base < 0.03  # a clean photo: its texture reads as little noise
    for sigma in (0.05, 0.1, 0.2):
        noisy = img + sigma * torch.randn(img.shape, generator=gen)
        got = float(noise_sigma(noisy))
        assert abs(got - sigma) < base + 0.05 * sigma, (sigma, got)  # the texture adds at most its own level
    # a pure noise image, and a smooth one
    assert abs(float(noise_sigma(0.3 * torch.randn(2, 3, 64, 64, generator=gen)).mean()) - 0.3) < 0.01
    ramp = torch.linspace(0, 1, 64).expand(1, 3, 64, 64)
    assert float(noise_sigma(ramp)) < 1e-6
    with pytest.raises(ValueError):
        noise_sigma(torch.zeros(3, 8, 8))


def test_ssim_local_means_are_the_valid_window_average_on_either_path():
    """The CPU path (scipy's separable correlation) and the torch path (two 1-D convolutions, a GPU's) give the
    window's average at every position where it fits whole, as a direct 2-D convolution does."""
    import torch.nn.functional as F

    from assocgan.metrics import gaussian_1d, local_means

    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 5, 23, 31, generator=gen, dtype=torch.float64)
    g = gaussian_1d(11, 1.5)
    want = F.conv2d(maps.reshape(10, 1, 23, 31), torch.outer(g, g)[None, None]).reshape(2, 5, 13, 21)
    for scipy_path in (True, False):
        torch.testing.assert_close(local_means(maps, g, scipy_path), want, rtol=0, atol=1e-14)
