"""assocgan.deepmetrics: LPIPS and DISTS against plain re-implementations of the published formulas, with stand-in
weights (random, the real files' keys and shapes) saved under the accepted names; their response to noise and blur on
real photos; FID against the closed form; KID; the one-line error for missing weights; torchvision's key layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from assocgan.data import photos
from assocgan.deepmetrics import DISTS, LPIPS, VGG16, AlexNet, fid, fid_warning, frechet_distance, kernel_inception_distance, load_torchvision
from assocgan.deepmetrics.fid import mmd2_unbiased
from assocgan.errors import UserError

# torchvision's parameter keys and shapes of alexnet().features and vgg16().features, written out
ALEX_CONVS = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
VGG_CONVS = {
    0: (64, 3),
    2: (64, 64),
    5: (128, 64),
    7: (128, 128),
    10: (256, 128),
    12: (256, 256),
    14: (256, 256),
    17: (512, 256),
    19: (512, 512),
    21: (512, 512),
    24: (512, 512),
    26: (512, 512),
    28: (512, 512),
}
VGG_CONVS = {i: s + (3, 3) for i, s in VGG_CONVS.items()}
ALEX_TAP_CHANNELS = (64, 192, 384, 256, 256)
VGG_TAP_CHANNELS = (64, 128, 256, 512, 512)


def torchvision_state(convs: dict[int, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's keys: He-initialised convolutions (activations keep their scale through the
    stack, as in the trained nets) and a classifier entry the loaders must ignore."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, shape in convs.items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"features.{i}.weight"] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    state["classifier.1.weight"] = torch.zeros(4, 4)
    return state


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Stand-in weights under the names the metrics look for: non-negative LPIPS lin weights (as the real ones are),
    DISTS alpha and beta drawn as DISTS_pytorch initialises them."""
    d = tmp_path_factory.mktemp("weights")
    g = torch.Generator().manual_seed(1)
    torch.save(torchvision_state(ALEX_CONVS, 2), d / "alexnet-owt-7be5be79.pth")
    torch.save(torchvision_state(VGG_CONVS, 3), d / "vgg16-397923af.pth")
    for net, chns, name in (("alex", ALEX_TAP_CHANNELS, "alex.pth"), ("vgg", VGG_TAP_CHANNELS, "lpips_vgg.pth")):
        torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(chns)}, d / name)
    n = 3 + sum(VGG_TAP_CHANNELS)
    assert n == 1475
    torch.save({"alpha": 0.1 + 0.01 * torch.randn(1, n, 1, 1, generator=g), "beta": 0.1 + 0.01 * torch.randn(1, n, 1, 1, generator=g)}, d / "weights.pt")
    return d


@pytest.fixture(scope="module")
def metrics(weights_dir):
    torch.set_num_threads(1)
    return {"lpips-alex": LPIPS("alex", weights_dir), "lpips-vgg": LPIPS("vgg", weights_dir), "dists": DISTS(weights_dir)}


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """Central 48x48 crops of three built-in test photos, (3, 3, 48, 48) in [0, 1]."""
    imgs = photos.builtin_photos("test", short_side=56)[:3]
    out = []
    for img in imgs:
        h, w = img.shape[:2]
        top, left = (h - 48) // 2, (w - 48) // 2
        out.append(torch.from_numpy(img[top : top + 48, left : left + 48].copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    padded = F.pad(images, (r, r, r, r), mode="reflect")
    out = F.conv2d(padded, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


# ---------------------------------------------------------------------------------------------------------- LPIPS, DISTS


@pytest.mark.parametrize("name", ["lpips-alex", "lpips-vgg", "dists"])
def test_identical_images_are_at_distance_zero(metrics, crops, name):
    d = metrics[name](crops, crops.clone())
    assert d.shape == (3,)
    assert torch.allclose(d, torch.zeros(3), atol=1e-6), d


@pytest.mark.parametrize("name", ["lpips-alex", "lpips-vgg", "dists"])
def test_distance_grows_with_noise_and_blur_on_real_photos(metrics, crops, name):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(crops.shape, generator=g)
    noisy = [metrics[name](crops, (crops + s * noise).clamp(0, 1)) for s in (0.02, 0.05, 0.1, 0.2)]
    blurred = [metrics[name](crops, blur(crops, s)) for s in (0.6, 1.2, 2.0, 3.0)]
    for series in (noisy, blurred):
        values = torch.stack(series)  # (levels, images)
        assert (values > 0).all(), values
        assert (values[1:] > values[:-1]).all(), values


def test_lpips_equals_the_published_formula(metrics, crops):
    """d(x, y) = sum_l 1/(H_l W_l) sum_hw || w_l * (yhat_l^x_hw - yhat_l^y_hw) ||^2, yhat unit-normalised along
    channels; written per image, per layer, per position."""
    x, y = crops, blur(crops, 1.0)
    for name in ("lpips-alex", "lpips-vgg"):
        m = metrics[name]
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        fx = m.net.taps(((2 * x - 1) - shift) / scale)
        fy = m.net.taps(((2 * y - 1) - shift) / scale)
        expected = []
        for n in range(x.shape[0]):
            total = 0.0
            for layer, (a, b) in enumerate(zip(fx, fy)):
                w = m.lins[layer].weight.detach().double().flatten()
                a, b = a[n].double(), b[n].double()
                na = a / (a.pow(2).sum(0).sqrt() + 1e-10)
                nb = b / (b.pow(2).sum(0).sqrt() + 1e-10)
                _, hh, ww = a.shape
                s = 0.0
                for i in range(hh):
                    for j in range(ww):
                        s += float((w * (na[:, i, j] - nb[:, i, j]) ** 2).sum())
                total += s / (hh * ww)
            expected.append(total)
        got = m(x, y)
        assert torch.allclose(got.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-5), (got, expected)


def test_dists_equals_the_published_formula(metrics, crops):
    """D(x, y) = 1 - sum_ij (alpha_ij l(x_j^(i), y_j^(i)) + beta_ij s(x_j^(i), y_j^(i))) with sum(alpha + beta) = 1,
    l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1), s = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2), per channel j
    of stage i (stage 0 the image itself), statistics over space, in float64."""
    m = metrics["dists"]
    x, y = crops, (crops + 0.05 * torch.randn(crops.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    fx = [x] + m.net.taps((x - mean) / std)
    fy = [y] + m.net.taps((y - mean) / std)
    alpha, beta = m.alpha.detach().double().flatten(), m.beta.detach().double().flatten()
    total_w = float(alpha.sum() + beta.sum())
    for n in range(x.shape[0]):
        score, k = 0.0, 0
        for a, b in zip(fx, fy):
            for j in range(a.shape[1]):
                u, v = a[n, j].double().flatten(), b[n, j].double().flatten()
                mu, mv = u.mean(), v.mean()
                su, sv, suv = ((u - mu) ** 2).mean(), ((v - mv) ** 2).mean(), ((u - mu) * (v - mv)).mean()
                lum = (2 * mu * mv + 1e-6) / (mu**2 + mv**2 + 1e-6)
                struct = (2 * suv + 1e-6) / (su + sv + 1e-6)
                score += float(alpha[k] * lum + beta[k] * struct) / total_w
                k += 1
        assert k == 1475
        assert abs(float(m(x[n : n + 1], y[n : n + 1])[0]) - (1 - score)) < 1e-5


def test_l2_pooling_is_the_root_of_a_hanning_weighted_sum_of_squares():
    x = torch.randn(1, 2, 7, 7, generator=torch.Generator().manual_seed(5))
    got = VGG16(pool="l2").features[4](torch.cat([x] * 32, 1))[:, :2]
    w = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]) / 4
    p = F.pad(x, (1, 1, 1, 1))
    expected = torch.empty(1, 2, 4, 4)
    for i in range(4):
        for j in range(4):
            expected[:, :, i, j] = ((p[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] ** 2 * w).sum((2, 3)) + 1e-12).sqrt()
    assert torch.allclose(got, expected, atol=1e-6)


# -------------------------------------------------------------------------------------------------------- weights, layout


def test_torchvision_state_dicts_load_strictly_into_the_backbones():
    for net, convs in ((AlexNet(), ALEX_CONVS), (VGG16(), VGG_CONVS), (VGG16(pool="l2"), VGG_CONVS)):
        state = torchvision_state(convs, 0)
        assert set(net.features.state_dict()) == {k[len("features.") :] for k in state if k.startswith("features.")}
        load_torchvision(net, state)
        assert torch.equal(net.features[0].weight, state["features.0.weight"])
        state.pop("features.0.bias")
        with pytest.raises(UserError, match="layout"):
            load_torchvision(net, state, "x.pth")
    assert len(AlexNet().features) == 13 and len(VGG16().features) == 31


def test_missing_weights_are_one_line_naming_the_files_and_the_folders(tmp_path, monkeypatch, weights_dir):
    monkeypatch.delenv("ASSOCGAN_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as e:
        LPIPS("alex", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "alexnet-owt-7be5be79.pth" in msg and "alex.pth" in msg and f"--weights-dir {tmp_path}" in msg
    assert "$ASSOCGAN_WEIGHTS" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    with pytest.raises(UserError, match=r"DISTS needs vgg16-397923af\.pth .* and DISTS\.pt \(or .*weights\.pt\)"):
        DISTS(tmp_path)
    # only the missing file is named; $ASSOCGAN_WEIGHTS is looked in
    (tmp_path / "vgg16-397923af.pth").write_bytes((weights_dir / "vgg16-397923af.pth").read_bytes())
    with pytest.raises(UserError) as e:
        LPIPS("vgg", tmp_path)
    assert "vgg16-397923af.pth" not in str(e.value).split(";")[0] and "lpips_vgg.pth" in str(e.value)
    monkeypatch.setenv("ASSOCGAN_WEIGHTS", str(weights_dir))
    assert LPIPS("vgg", tmp_path) is not None


def test_a_wrong_weights_file_is_named(tmp_path, weights_dir):
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes((weights_dir / "alexnet-owt-7be5be79.pth").read_bytes())
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "lpips_alex.pth")
    with pytest.raises(UserError, match=r"lpips_alex\.pth: not the lpips package's alex weights \(lin0"):
        LPIPS("alex", tmp_path)
    (tmp_path / "lpips_alex.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable torch weights file"):
        LPIPS("alex", tmp_path)


# ---------------------------------------------------------------------------------------------------------------- FID, KID


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(300, 8))
    assert abs(fid(f, f)) < 1e-6
    assert abs(fid(torch.from_numpy(f).float(), torch.from_numpy(f).float())) < 1e-4


def test_frechet_distance_equals_the_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # diagonal covariances: sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) = sum_i (sqrt(s1_i) - sqrt(s2_i))^2
    s1, s2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # general covariances: tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)), by eigendecompositions
    a, b = _spd(d, rng), _spd(d, rng)
    ev, vec = np.linalg.eigh(a)
    ra = vec @ np.diag(np.sqrt(ev)) @ vec.T
    tr = np.sum(np.sqrt(np.linalg.eigvalsh(ra @ b @ ra)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(a) + np.trace(b) - 2 * tr
    assert frechet_distance(mu1, a, mu2, b) == pytest.approx(expected, rel=1e-8)
    # samples of two Gaussians: the estimate approaches the closed form
    x = rng.multivariate_normal(mu1, a, size=20000)
    y = rng.multivariate_normal(mu2, b, size=20000)
    assert fid(x, y) == pytest.approx(expected, rel=0.05)


def test_frechet_distance_survives_singular_covariances():
    f = np.random.default_rng(2).normal(size=(5, 16))  # n < d: singular covariances
    g = f + 0.1
    value = fid(f, g)
    assert np.isfinite(value) and value == pytest.approx(16 * 0.01, abs=1e-2)


def test_kid_is_near_zero_for_one_distribution_and_not_for_two():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    shifted = rng.normal(0.5, 1, size=(200, 16))
    same, same_std = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    far, _ = kernel_inception_distance(a, shifted, subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3 and far > 20 * abs(same) and far > 0.1
    # a set against itself: exactly (2/m)(mean off-diagonal k - mean diagonal k), which vanishes as 1/m
    big = rng.normal(size=(1000, 16))
    ident, _ = kernel_inception_distance(big, big, subsets=2, subset_size=1000)
    k = (big @ big.T / 16 + 1) ** 3
    m = 1000
    assert ident == pytest.approx(2 / m * ((k.sum() - np.trace(k)) / (m * (m - 1)) - np.trace(k) / m), rel=1e-8)
    assert abs(ident) < 0.05 * far


def test_unbiased_mmd_equals_the_pairwise_definition():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    k = lambda u, v: (u @ v / 3 + 1) ** 3
    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_fid_warning_says_why_small_sets_mislead():
    msg = fid_warning(500, 2048)
    assert "singular" in msg and "biased" in msg and "KID" in msg
    assert "biased" in fid_warning(3000, 2048) and "singular" not in fid_warning(3000, 2048)
    assert fid_warning(10000, 2048) is None


def test_fid_inception_loads_its_weights_file_strictly_and_gives_pool3_features(tmp_path):
    from assocgan.deepmetrics import FEATURE_DIM, FIDInception

    state = FIDInception(load=False).state_dict()
    assert state["fc.weight"].shape == (1008, 2048) and state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert not any(k.startswith("AuxLogits") for k in state)
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    net = FIDInception(tmp_path)
    x = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(0))
    f = net(x, resize=False)
    assert f.shape == (2, FEATURE_DIM) and torch.isfinite(f).all() and (f >= 0).all()
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(UserError, match="not pytorch-fid's InceptionV3 weights"):
        FIDInception(tmp_path)


def test_a_run_scores_lpips_and_dists_from_the_weights_it_is_given(weights_dir, tmp_path, capsys):
    """``--metrics psnr,ssim,lpips-alex,dists`` with the weights in ``--weights-dir``: a matrix per metric and method,
    each distance 0 for doing nothing on no task and lower being better in the summaries; without the weights, one
    line before training."""
    import json

    from assocgan.cli import main

    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--benchmark", "restore4", "--order", "1,2", "--methods", "tl", "--threads", "1"]
    assert main([*args, "--metrics", "psnr,ssim,lpips-alex,dists", "--weights-dir", str(weights_dir), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["metrics"] == ["psnr", "ssim", "lpips-alex", "dists"]
    tl = res["methods"]["tl"]
    for m in ("lpips-alex", "dists"):
        assert len(tl[m]) == 2 and all(v is not None and v > 0 for v in tl[m][-1]), m
        assert all(v > 0 for v in res["identity"][m])  # the degraded input is at a distance from its target
        assert (out / "csv" / f"tl_{m}.csv").is_file()
    capsys.readouterr()
    empty = tmp_path / "no-weights"
    empty.mkdir()
    assert main([*args, "--metrics", "psnr,lpips-vgg", "--weights-dir", str(empty), "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vgg16-397923af.pth" in err
    assert not (tmp_path / "run2" / "results.json").exists()


def test_fid_of_small_sets_is_the_frechet_distance_computed_in_their_span():
    """With no more vectors than dimensions (singular covariances), ``fid`` takes the exact route through the
    vectors (singular values of an n1 x n2 matrix) instead of sqrtm of d x d: the same value as sqrtm's, to its
    1e-6 offset, in milliseconds at d = 2048 where sqrtm takes minutes."""
    import time

    from assocgan.deepmetrics.fid import frechet_distance_low_rank, statistics

    rng = np.random.default_rng(5)
    for d, n1, n2 in ((128, 20, 30), (256, 6, 6), (64, 60, 9)):
        x = rng.standard_normal((n1, d)) * rng.random(d)
        y = rng.standard_normal((n2, d)) + 0.3
        via_sqrtm = frechet_distance(*statistics(x), *statistics(y))
        assert frechet_distance_low_rank(x, y) == pytest.approx(via_sqrtm, rel=1e-6)
        assert fid(x, y) == frechet_distance_low_rank(x, y)
    x = rng.standard_normal((300, 8))
    assert frechet_distance_low_rank(x, x + 1) == pytest.approx(frechet_distance(*statistics(x), *statistics(x + 1)), rel=1e-9)  # n > d too
    big = rng.random((8, 2048))
    start = time.perf_counter()
    assert abs(fid(big, big)) < 1e-9 and fid(big, big + 0.1) == pytest.approx(2048 * 0.01, rel=1e-6)
    assert time.perf_counter() - start < 10
