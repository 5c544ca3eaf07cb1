"""The metric registry: a metric registered in ``metrics.METRICS`` alone, here a lower-is-better mean absolute
error, is scored, summarised, written, tabulated, plotted and reported like PSNR and SSIM, with its own format,
label and direction: its best is its lowest, forgetting stays positive and BWT negative when tasks are forgotten."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from assocgan.errors import UserError
from assocgan.evaluate import summarize
from assocgan.metrics import METRICS, Convention, Metric, get_metric, scores
from assocgan.report.console import print_tables
from assocgan.report.html import write_report
from assocgan.report.plots import forgetting_figure, save_figure
from assocgan.report.tables import matrix_table, summary_table
from assocgan.runfolder import RunFolder
from assocgan.runner import method_entry
from assocgan.seeds import combine
from assocgan.studies.sweep import lambda_figure

# the consumers are imported before MAE is registered: one that copied the registry at import would miss it


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.double() - target.double()).abs().flatten(1).mean(1).float()


TASKS = ["a", "b", "c"]
# R[i][j] in MAE (lower is better): task 1 goes 0.10 -> 0.15 -> 0.20, task 2 0.08 -> 0.12: both forgotten
MATRIX = [[0.10, None, None], [0.15, 0.08, None], [0.20, 0.12, 0.05]]
BWT = ((0.10 - 0.20) + (0.08 - 0.12)) / 2  # -0.07: negative, forgotten
FORGETTING = ((0.20 - 0.10) + (0.12 - 0.08)) / 2  # +0.07: the best earlier score is the lowest, 0.10 (not 0.15)
IDENTITY = [0.30, 0.10, 0.04]  # doing nothing: worse than the end on task 1, better on tasks 2 and 3


@pytest.fixture
def registry(monkeypatch):
    """METRICS with MAE added (every consumer reads the same dict)."""
    monkeypatch.setitem(METRICS, "mae", Metric("mae", mae, ".4f", False, "MAE (0-1)"))
    return METRICS


def entry(final_avg: float) -> dict:
    """A complete method's entry whose MAE matrix is MATRIX, its final average ``final_avg``."""
    s = summarize([row[: i + 1] for i, row in enumerate(MATRIX)], metric="mae")
    return {
        "title": None,
        "cite": "",
        "options": {},
        "task_id_at_test": False,
        "complete": True,
        "matrix": MATRIX,
        **s,
        "final_avg": final_avg,
        "memory_bytes": 0,
        "memory_by_task": [0, 0, 0],
        "train_seconds": 1.0,
        "train_seconds_by_task": [0.3, 0.3, 0.4],
        "train_cpu_seconds": 1.0,
        "mae": MATRIX,
        "psnr": [[20.0, None, None], [19.0, 21.0, None], [18.0, 20.0, 22.0]],
        "ssim": [[0.5, None, None], [0.4, 0.6, None], [0.3, 0.5, 0.7]],
    }


@pytest.fixture
def results(registry):
    return {
        "benchmark": "toy",
        "metric": "mae",
        "tasks": TASKS,
        "task_descriptions": ["", "", ""],
        "identity": {"mae": IDENTITY, "psnr": [15.0, 15.0, 15.0], "ssim": [0.2, 0.2, 0.2]},
        "config": {"steps": 10},
        "methods": {"tl": entry(0.20), "jl": entry(0.10), "assoc": entry(0.15)},
    }


def test_get_metric_names_the_metric_and_the_choices(registry):
    assert get_metric("mae").higher_is_better is False
    with pytest.raises(UserError, match=r"'lpips'.*psnr or ssim or lpips-alex or lpips-vgg or dists or fid or kid or mae"):
        get_metric("lpips")


def test_scores_and_summaries_follow_the_direction(registry):
    x, y = torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), 0.25)
    assert set(scores(x, y)) == {"psnr", "ssim"}  # a run scores the metrics it names (--metrics), psnr and ssim by default
    every = Convention(metrics=("psnr", "ssim", "mae"))
    assert set(scores(x, y, every)) == {"psnr", "ssim", "mae"}
    assert scores(x, y, every)["mae"].tolist() == pytest.approx([0.25, 0.25], abs=1e-3)  # after uint8 rounding
    s = summarize([row[: i + 1] for i, row in enumerate(MATRIX)], ahead=[0.09, 0.07], initial=[0.5, 0.1, 0.2], metric="mae")
    assert s["bwt"] == pytest.approx(BWT) and s["bwt"] < 0
    assert s["forgetting"] == pytest.approx(FORGETTING) and s["forgetting"] > 0
    assert s["fwt"] == pytest.approx(((0.1 - 0.09) + (0.2 - 0.07)) / 2)  # lower than the untrained generator: a gain


def test_a_run_entry_is_summarised_in_the_benchmark_metric(registry):
    rows = [[{"psnr": 20.0, "ssim": 0.5, "mae": v} for v in row if v is not None] for row in MATRIX]
    records = [
        SimpleNamespace(scores=r, initial=None, ahead=None, memory={}, train_seconds=1.0, cpu_seconds=1.0, losses={}, routed=None, router_accuracy=None)
        for r in rows
    ]
    bench = SimpleNamespace(tasks=[SimpleNamespace(name=t) for t in TASKS], metric="mae")
    e = method_entry(bench, SimpleNamespace(title="TL", cite="", needs_task_id=False), {}, records, [])
    assert e["matrix"] == e["mae"] == MATRIX
    assert e["bwt"] == pytest.approx(BWT) and e["forgetting"] == pytest.approx(FORGETTING)


def test_csv_tables_and_report(results, tmp_path, capsys):
    folder = RunFolder(tmp_path)
    folder.write_results(results)
    folder.write_csvs(results, "tl")
    with open(tmp_path / "csv" / "tl_mae.csv", newline="") as fh:
        assert list(csv.reader(fh))[2] == ["b", "0.150000", "0.080000", ""]

    summary = summary_table(results)
    assert summary.header[1] == "final AVG (MAE)"
    rows = {r[0]: r for r in summary.rows}
    assert rows["Input (do nothing)"][1] == "0.1467"  # the metric's own format
    assert rows["tl"][2] == "-0.0700" and rows["tl"][4] == "0.0700"  # BWT negative, forgetting positive
    assert rows["tl"][-1] == "T2,T3"  # worse than doing nothing where the error is higher
    assert rows["assoc"][-2] == "50%"  # JL (lower error) is better than TL: half the gap closed
    assert matrix_table(results, "tl").header[0] == "MAE"

    print_tables(results)
    assert "final AVG (MAE)" in capsys.readouterr().out
    page = write_report(tmp_path).read_text()
    assert "the same in PSNR" in page and "the same in SSIM" in page and "metric MAE" in page
    assert (tmp_path / "plots" / "forgetting.png").exists()


def test_plots_name_the_metric_and_mark_the_lowest_as_best(results, tmp_path):
    fig = forgetting_figure(results)
    assert fig.axes[0].get_ylabel() == "MAE (0-1)"
    assert save_figure(fig, tmp_path / "forgetting.png").exists()
    summary = {
        "metric": "mae",
        "benchmark": "toy",
        "prior_tasks": ["a"],
        "method": "assoc",
        "option": "lambda_distill",
        "rows": [{"value": v, "final": [o, o], "prior_mean": o, "overall": o} for v, o in ((0.5, 0.2), (1.0, 0.05), (2.0, 0.3))],
    }
    fig = lambda_figure(summary)
    assert [t.get_text() for t in fig.axes[1].texts] == ["best: 1"]
    assert fig.axes[1].get_ylabel() == "final MAE (0-1)"


def test_seeds_combine_every_metric(results):
    combined = combine({0: results, 1: results})
    assert combined["methods"]["tl"]["mae"] == MATRIX and combined["identity"]["mae"] == IDENTITY
