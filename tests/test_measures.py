"""The continual-learning measures beside BWT: forgetting in both conventions, the stability gap, intransigence
and the plasticity gap, in each metric's own direction, from a run to its tables."""

from __future__ import annotations

import json

import pytest

from assocgan import metrics
from assocgan.cli import main
from assocgan.evaluate import reference_gaps, summarize
from assocgan.metrics import Metric
from assocgan.report.tables import measures_table, to_latex

R = [[30.0], [28.0, 31.0], [27.0, 29.0, 32.0]]


def test_forgetting_in_both_conventions():
    s = summarize(R, metric="psnr")
    assert s["bwt"] == pytest.approx(((27 - 30) + (29 - 31)) / 2)
    assert s["forgetting_last"] == pytest.approx(-s["bwt"])
    assert s["forgetting"] == pytest.approx(((30 - 27) + (31 - 29)) / 2)  # best earlier is the first score here
    best_later = [[30.0], [33.0, 31.0], [27.0, 29.0, 32.0]]  # task 1 rose after its training, then fell
    s = summarize(best_later, metric="psnr")
    assert s["forgetting"] == pytest.approx(((33 - 27) + (31 - 29)) / 2) and s["forgetting_last"] == pytest.approx(((30 - 27) + (31 - 29)) / 2)


def test_the_stability_gap_is_the_deepest_dip_during_later_training():
    curve = [{"step": 5, "task": 1, "psnr": [25.0, 20.0]}, {"step": 9, "task": 2, "psnr": [26.0, 24.0, 18.0]}]
    s = summarize(R, metric="psnr", curve=curve)
    assert s["stability_gap"] == pytest.approx(((30 - 25) + (31 - 24)) / 2)
    assert summarize(R, metric="psnr")["stability_gap"] is None  # the ends of tasks alone cannot see a dip
    kept = [[30.0], [31.0, 31.0]]  # task 0 ends above its first score: no dip at the end nor during
    assert summarize(kept, metric="psnr", curve=[{"step": 5, "task": 1, "psnr": [35.0, 20.0]}])["stability_gap"] == pytest.approx(0.0)
    assert summarize(kept, metric="psnr", curve=[{"step": 5, "task": 1, "psnr": [26.0, 20.0]}])["stability_gap"] == pytest.approx(4.0)


@pytest.fixture
def mae(monkeypatch):
    """A lower-is-better metric in the registry."""
    m = Metric("mae", lambda p, t: (p - t).abs().flatten(1).mean(1), ".4f", False, "MAE")
    monkeypatch.setitem(metrics.METRICS, "mae", m)
    return m


def test_a_lower_is_better_metric_turns_every_measure_round(mae):
    low = [[0.10], [0.15, 0.05], [0.20, 0.08, 0.02]]
    s = summarize(low, metric="mae", curve=[{"step": 3, "task": 1, "mae": [0.30, 0.2]}])
    assert s["bwt"] == pytest.approx(-((0.20 - 0.10) + (0.08 - 0.05)) / 2)
    assert s["forgetting"] == pytest.approx(((0.20 - 0.10) + (0.08 - 0.05)) / 2)
    assert s["forgetting_last"] == pytest.approx(-s["bwt"])
    assert s["stability_gap"] == pytest.approx(0.30 - 0.10)
    results = {"metric": "mae", "methods": {"jl": {"matrix": [[0.05], [0.1, 0.04]]}, "tl": {"matrix": [[0.10], [0.3, 0.06]]}}}
    reference_gaps(results)
    assert results["methods"]["tl"]["intransigence"] == pytest.approx(((0.10 - 0.05) + (0.06 - 0.04)) / 2)
    assert "plasticity_gap" not in results["methods"]["tl"]  # no specialists in the run: left out


def test_intransigence_and_plasticity_against_joint_learning_and_the_specialists():
    results = {
        "metric": "psnr",
        "methods": {
            "jl": {"matrix": [[30.0], [29.0, 31.0]]},
            "single": {"matrix": [[32.0], [32.0, 34.0]]},
            "tl": {"matrix": [[31.0], [20.0, 30.0]]},
        },
    }
    reference_gaps(results)
    tl = results["methods"]["tl"]
    assert tl["intransigence"] == pytest.approx(((30 - 31) + (31 - 30)) / 2)
    assert tl["plasticity_gap"] == pytest.approx(((32 - 31) + (34 - 30)) / 2)
    assert results["methods"]["jl"]["intransigence"] == 0.0


def test_a_run_writes_every_measure_and_reports_them(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--benchmark", "restore4", "--methods", "tl,jl,single", "--eval-every", "6", "--steps", "6"]
    assert main([*args, "--order", "1,2", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    tl = res["methods"]["tl"]
    for key in ("forgetting", "forgetting_last", "stability_gap", "intransigence", "plasticity_gap"):
        assert tl[key] is not None, key
    assert tl["forgetting_last"] == pytest.approx(-tl["bwt"])
    assert res["methods"]["single"]["task_id_at_test"] is True
    table = measures_table(res)
    marks = {r[0]: r[-1] for r in table.rows}
    assert [k for k, v in marks.items() if v == "yes"] == [k for k in marks if "(task id)" in k] != []
    capsys.readouterr()
    assert main(["report", str(out), "--latex"]) == 0
    latex = capsys.readouterr().out
    assert "Continual-learning measures" in latex and "stability gap" in latex
    assert "Continual-learning measures" in (out / "report.html").read_text()
    assert to_latex(table) in latex
