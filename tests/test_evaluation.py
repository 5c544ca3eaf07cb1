"""The evaluation conventions (uint8 rounding, the Y channel, a border crop) against scikit-image and BasicSR's
formulas, and as a run applies, records and states them."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from assocgan.config import make_config
from assocgan.errors import UserError
from assocgan.metrics import Convention, scores, to_y


def _crops(h: int = 40, w: int = 48) -> np.ndarray:
    """Crops of real photos, (N, H, W, 3) uint8."""
    return np.stack(
        [skdata.astronaut()[60 : 60 + h, 200 : 200 + w], skdata.coffee()[100 : 100 + h, 300 : 300 + w], skdata.chelsea()[80 : 80 + h, 150 : 150 + w]]
    )


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def pair():
    """Targets as 8-bit images and outputs as a network gives them: floats between 8-bit values."""
    y8 = _crops()
    rng = np.random.default_rng(0)
    out = np.clip(y8 / 255 + rng.normal(0, 0.04, y8.shape) + 0.01, 0, 1)
    return _t(out), _t(y8 / 255), out, y8


def _basicsr_y(img_u8_rgb: np.ndarray) -> np.ndarray:
    """BasicSR's to_y_channel on a BGR image as cv2 reads it: bgr2ycbcr(img / 255, y_only=True) * 255."""
    bgr = img_u8_rgb[..., ::-1].astype(np.float64) / 255
    return np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0


def _basicsr_psnr(a: np.ndarray, b: np.ndarray, crop_border: int, test_y_channel: bool) -> float:
    """BasicSR's calculate_psnr on two HWC 8-bit images, as that code computes it."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if crop_border:
        a, b = a[crop_border:-crop_border, crop_border:-crop_border], b[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        a, b = _basicsr_y(a.astype(np.uint8)), _basicsr_y(b.astype(np.uint8))
    mse = np.mean((a - b) ** 2)
    return 10.0 * np.log10(255.0 * 255.0 / mse)


def _u8(out: np.ndarray) -> np.ndarray:
    return np.round(out * 255).astype(np.uint8)


def test_quantized_scores_are_those_of_the_8bit_images(pair):
    pred, target, out, y8 = pair
    got = scores(pred, target)  # the default: rounded to uint8, RGB, no border
    o8 = _u8(out)
    want_p = [peak_signal_noise_ratio(y8[i], o8[i], data_range=255) for i in range(len(y8))]
    want_s = [
        structural_similarity(o8[i], y8[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)
        for i in range(len(y8))
    ]
    np.testing.assert_allclose(got["psnr"].numpy(), want_p, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["ssim"].numpy(), want_s, atol=1e-4, rtol=0)
    raw = scores(pred, target, Convention(quantize=False))
    assert (got["psnr"] - raw["psnr"]).abs().max() > 1e-3  # the rounding changes the score: it was applied
    raw_want = [peak_signal_noise_ratio(y8[i] / 255, pred[i].permute(1, 2, 0).double().numpy(), data_range=1) for i in range(len(y8))]
    np.testing.assert_allclose(raw["psnr"].numpy(), raw_want, atol=1e-4, rtol=0)


def test_y_channel_is_basicsr_bt601_luma():
    # hand-made: pure primaries, white and black, in [0, 255] units
    rgb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0]]).T.reshape(1, 3, 5, 1)
    y = to_y(rgb).flatten() * 255
    np.testing.assert_allclose(y.numpy(), [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0], atol=1e-9)
    y8 = _crops(16, 16)
    np.testing.assert_allclose((to_y(_t(y8 / 255)) * 255)[:, 0].numpy(), np.stack([_basicsr_y(im) for im in y8]), atol=1e-9)


def test_psnr_on_y_with_a_border_matches_basicsr(pair):
    pred, target, out, y8 = pair
    o8 = _u8(out)
    for border, space in ((0, "y"), (4, "y"), (4, "rgb")):
        got = scores(pred, target, Convention(space=space, crop_border=border))["psnr"]
        want = [_basicsr_psnr(o8[i], y8[i], border, space == "y") for i in range(len(y8))]
        np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0, err_msg=f"{space} border {border}")


def test_ssim_on_y_with_a_border_matches_skimage(pair):
    pred, target, out, y8 = pair
    got = scores(pred, target, Convention(space="y", crop_border=3))["ssim"]
    o8 = _u8(out)
    want = [
        structural_similarity(
            _basicsr_y(o8[i])[3:-3, 3:-3], _basicsr_y(y8[i])[3:-3, 3:-3], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        for i in range(len(y8))
    ]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)


def test_border_crop_ignores_the_border_exactly():
    """Grey targets; outputs 10 levels brighter in green inside and black on a 2 px border: with the border cut
    off the Y error is exactly 128.553 * 10 / 255 everywhere."""
    target = torch.full((1, 3, 20, 20), 128 / 255)
    pred = target.clone()
    pred[:, 1] += 10 / 255
    pred[..., :2, :] = 0
    pred[..., -2:, :] = 0
    pred[..., :, :2] = 0
    pred[..., :, -2:] = 0
    err = 128.553 * 10 / 255
    got = float(scores(pred, target, Convention(space="y", crop_border=2))["psnr"])
    assert got == pytest.approx(10 * math.log10(255**2 / err**2), abs=1e-4)
    assert float(scores(pred, target, Convention(space="y", crop_border=1))["psnr"]) < got - 5  # the border counts without the crop


@pytest.mark.parametrize(
    "overrides, flag", [(dict(crop_border=-1), "--crop-border"), (dict(crop_border=11), "--crop-border"), (dict(eval_space="lab"), "--eval-space")]
)
def test_bad_evaluation_settings_name_their_option(overrides, flag):
    with pytest.raises(UserError, match=f"^{flag}"):
        make_config("smoke", **overrides)  # smoke: 32 px; a border of 11 leaves 10 px, under the SSIM window


def test_cli_bad_crop_border_exits_2(tmp_path, capsys):
    from assocgan.cli import main

    assert main(["run", "--preset", "smoke", "--crop-border", "20", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--crop-border 20" in err[0]
    assert not (tmp_path / "r" / "results.json").exists()


def _smoke_run(tmp_path_factory, name: str, *args: str) -> tuple:
    """A small smoke-preset run into a fresh folder; its folder and what it printed."""
    from assocgan.cli import main

    out = tmp_path_factory.mktemp(name) / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", "--preset", "smoke", "--threads", "1", "--n-train", "4", "--n-test", "2", *args, "--out", str(out)])
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


@pytest.fixture(scope="module")
def y_run(tmp_path_factory):
    return _smoke_run(tmp_path_factory, "eval", "--steps", "2", "--methods", "tl", "--eval-space", "y", "--crop-border", "4")[0]


def test_a_run_scores_by_its_convention_and_records_it(y_run):
    from assocgan import load_generator
    from assocgan.data.benchmarks import load_benchmark

    res = json.loads((y_run / "results.json").read_text())
    assert {k: res["config"][k] for k in ("eval_quantize", "eval_space", "crop_border")} == {"eval_quantize": True, "eval_space": "y", "crop_border": 4}
    bench = load_benchmark("restore4", size=32, n_train=4, n_test=2, seed=0)
    G = load_generator(y_run, "tl")
    for j, task in enumerate(bench.tasks):
        x8, y8 = task.test_x.permute(0, 2, 3, 1).numpy(), task.test_y.permute(0, 2, 3, 1).numpy()
        with torch.no_grad():
            o8 = _u8(G(task.test_x.float() / 255).clamp(0, 1).permute(0, 2, 3, 1).numpy())
        want = np.mean([_basicsr_psnr(o8[i], y8[i], 4, True) for i in range(len(y8))])
        floor = np.mean([_basicsr_psnr(x8[i], y8[i], 4, True) for i in range(len(y8))])
        assert res["methods"]["tl"]["matrix"][-1][j] == pytest.approx(want, abs=1e-3), j
        assert res["identity"]["psnr"][j] == pytest.approx(floor, abs=1e-3), j


def test_the_tasks_table_states_the_convention(y_run):
    from assocgan.report.tables import tasks_table

    res = json.loads((y_run / "results.json").read_text())
    assert "PSNR and SSIM on Y, uint8, border 4" in tasks_table(res).note
    assert "on Y, uint8, border 4" in (y_run / "report.html").read_text()
    old = {**res, "config": {k: v for k, v in res["config"].items() if k not in ("eval_quantize", "eval_space", "crop_border")}}
    assert "on RGB, float, border 0" in tasks_table(old).note  # a run recorded before these settings was scored thus


def test_a_folder_scored_otherwise_is_refused(y_run, capsys):
    from assocgan.cli import main

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
                "--n-train",
                "4",
                "--n-test",
                "2",
                "--methods",
                "tl",
                "--eval-space",
                "y",
                "--crop-border",
                "2",
                "--out",
                str(y_run),
            ]
        )
        == 2
    )
    assert "crop_border" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# forward transfer


def test_fwt_on_a_hand_made_matrix():
    from assocgan.evaluate import summarize

    matrix = [[20.0], [18.0, 25.0], [17.0, 24.0, 30.0]]
    ahead, initial = [16.0, 19.0], [15.0, 14.0, 20.0]  # R[0][1], R[1][2]; the untrained model on each task
    s = summarize(matrix, ahead, initial)
    assert s["fwt"] == pytest.approx(((16 - 14) + (19 - 20)) / 2)  # 0.5
    assert s["bwt"] == pytest.approx(((17 - 20) + (24 - 25)) / 2)  # unchanged by FWT
    assert summarize(matrix)["fwt"] is None
    assert summarize(matrix, [16.0, None], initial)["fwt"] is None
    assert summarize([[20.0]], [], [15.0])["fwt"] is None  # one task: nothing comes before it


@pytest.fixture(scope="module")
def fwt_run(tmp_path_factory):
    return _smoke_run(tmp_path_factory, "fwt", "--steps", "3", "--order", "1,2,3", "--methods", "tl,single")


def test_fwt_is_measured_on_the_generators_the_run_trained(fwt_run):
    from assocgan import load_generator
    from assocgan.data.benchmarks import load_benchmark
    from assocgan.evaluate import evaluate_task

    out, printed = fwt_run
    res = json.loads((out / "results.json").read_text())
    tasks = load_benchmark("restore4", size=32, n_train=4, n_test=2, seed=0, order="1,2,3").tasks
    tl = res["methods"]["tl"]
    # b_j: the untrained residual U-Net is the identity, so it scores exactly what doing nothing scores
    np.testing.assert_allclose(tl["initial"]["psnr"], res["identity"]["psnr"], atol=1e-5)
    for j in (1, 2):  # R[j-1][j]: task j as the generator saved after task j-1 answers it
        sc = evaluate_task(load_generator(out, "tl", after_task=j), tasks[j])
        assert tl["ahead"]["psnr"][j - 1] == pytest.approx(sc["psnr"], abs=1e-4)
        assert tl["ahead"]["ssim"][j - 1] == pytest.approx(sc["ssim"], abs=1e-5)
        assert tl["matrix"][j - 1][j] is None  # the matrix keeps its null cells
    want = sum(tl["ahead"]["psnr"][j - 1] - tl["initial"]["psnr"][j] for j in (1, 2)) / 2
    assert tl["fwt"] == pytest.approx(want, abs=1e-9) and abs(tl["fwt"]) > 1e-4
    single = res["methods"]["single"]  # told the task identity: its answer for a task does not exist before it
    assert single["fwt"] is None and single["ahead"]["psnr"] == [None, None]
    assert "FWT" in printed and f"{tl['fwt']:+.2f}" in printed
