"""``--metrics`` and ``--weights-dir``: a run scores only the metrics it names, every consumer follows them, and a
metric that needs pretrained weights loads them once, before training, failing in one line without them. The
weighted metric here is a toy defined in the test: a lower-is-better distance scaled by a tensor read from the
weights directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config
from assocgan.errors import UserError
from assocgan.metrics import METRICS, Metric, load_metrics
from assocgan.report.tables import run_tables, to_latex, to_markdown, to_text
from assocgan.results import Results, scored_metrics

SMOKE = ["--benchmark", "restore4", "--preset", "smoke", "--seed", "0", "--threads", "1", "--tensorboard", "off"]
TOY_FILE = "toy.pt"


def load_toy(weights_dir: str | None):
    """The toy's per-image function, its scale read from ``weights_dir/toy.pt``."""
    path = Path(weights_dir or ".") / TOY_FILE
    if weights_dir is None or not path.is_file():
        raise UserError(f"--metrics toy: needs {TOY_FILE} in --weights-dir (looked in {weights_dir})")
    scale = float(torch.load(path))
    return lambda p, t: scale * (p.double() - t.double()).abs().flatten(1).mean(1).float()


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METRICS, "toy", Metric("toy", None, ".4f", False, "toy distance", load=load_toy))
    return METRICS["toy"]


@pytest.fixture
def weights(tmp_path):
    d = tmp_path / "weights"
    d.mkdir()
    torch.save(torch.tensor(2.0), d / TOY_FILE)
    return d


def test_the_setting_is_checked_in_one_line():
    assert make_config("smoke").metrics == "psnr,ssim"
    assert make_config("smoke", metrics="ssim").metrics == "ssim"
    with pytest.raises(UserError, match=r"^--metrics: unknown metric 'lpips'; choose from psnr, ssim, lpips-alex, lpips-vgg, dists, fid, kid$"):
        make_config("smoke", metrics="psnr,lpips")
    cfg = make_config("smoke", metrics="ssim")
    assert cfg.scored_metrics("psnr") == ("psnr", "ssim")  # the headline metric is added, first
    assert cfg.convention("psnr").metrics == ("psnr", "ssim")


def test_load_fails_in_one_line_and_loads_once(toy, weights):
    assert toy.needs_weights and not METRICS["psnr"].needs_weights
    with pytest.raises(UserError, match="toy.pt"):
        load_metrics(["psnr", "toy"], None)
    fns = load_metrics(["psnr", "toy"], str(weights))
    assert fns["toy"] is load_metrics(["toy"], str(weights))["toy"]  # kept: loaded once a process
    x, y = torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.25)
    assert float(fns["toy"](x, y)) == pytest.approx(0.5)


def test_old_results_mean_psnr_and_ssim():
    assert scored_metrics({"metric": "psnr"}) == ["psnr", "ssim"]
    assert scored_metrics({"metric": "psnr", "metrics": ["ssim"]}) == ["psnr", "ssim"]
    assert scored_metrics({"metric": "ssim", "metrics": ["psnr", "toy"]}) == ["ssim", "psnr", "toy"]


def test_a_run_scores_the_metrics_it_names(toy, weights, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", *SMOKE, "--methods", "tl", "--out", str(out)]
    assert main([*args, "--metrics", "psnr,ssim,toy", "--weights-dir", str(weights)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["metrics"] == ["psnr", "ssim", "toy"] and set(res["identity"]) == {"psnr", "ssim", "toy"}
    entry = res["methods"]["tl"]
    for m in ("psnr", "ssim", "toy"):
        assert len(entry[m]) == 4 and all(v is not None for v in entry[m][-1])
        assert (out / "csv" / f"tl_{m}.csv").is_file()
    assert set(entry["initial"]) == {"psnr", "ssim", "toy"}
    assert Results.from_json(res).methods["tl"].scores.keys() == {"psnr", "ssim", "toy"}
    assert Results.from_json(res).to_json() == res
    tables = run_tables(res)
    every = tables[-1]
    assert every.header == ["Method", "final AVG (PSNR)", "final AVG (SSIM)", "final AVG (TOY)"]
    assert "TOY" in to_text(every) and "TOY" in to_markdown(every) and "TOY" in to_latex(every)
    page = (out / "report.html").read_text()
    assert "the same in TOY" in page and "the same in SSIM" in page and "forgetting_toy" in page
    assert (out / "plots" / "forgetting_toy.png").is_file() and (out / "plots" / "forgetting_ssim.png").is_file()

    psnr_only = tmp_path / "psnr"
    assert main(["run", *SMOKE, "--methods", "tl", "--out", str(psnr_only), "--metrics", "psnr"]) == 0
    res = json.loads((psnr_only / "results.json").read_text())
    assert res["metrics"] == ["psnr"] and "ssim" not in res["methods"]["tl"] and set(res["identity"]) == {"psnr"}
    assert sorted(p.name for p in (psnr_only / "csv").iterdir()) == ["tl_psnr.csv"]
    assert "the same in" not in (psnr_only / "report.html").read_text()


def test_missing_weights_fail_before_training(toy, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", *SMOKE, "--methods", "tl", "--out", str(out), "--metrics", "psnr,toy", "--weights-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "toy.pt" in err and len(err.strip().splitlines()) == 1
    assert not (out / "results.json").exists() and not (out / "checkpoints").exists() and not (out / "csv").exists()
