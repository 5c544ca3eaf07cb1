"""A method whose training diverges (a non-finite loss or weight) is stopped with one line naming the method, the
task and the step; it is marked failed in results.json and the tables; the other methods' results are kept and
the run exits non-zero."""

from __future__ import annotations

import json

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config
from assocgan.report.tables import matrix_table, summary_table
from assocgan.runner import benchmark_for
from assocgan.train import Diverged, non_finite, train_method


def test_a_diverging_method_fails_alone(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["run", "--preset", "smoke", "--threads", "1", "--steps", "4", "--methods", "lifelonggan,tl", "--lifelonggan-lambda", "1e39", "--out", str(out)]
    )  # finite in Python, infinite in float32
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[0].startswith("assocgan: lifelonggan diverged on task 2 (impulse) at step ") and "loss is inf" in err[0]
    assert "1 method(s) failed (lifelonggan" in err[-1]
    res = json.loads((out / "results.json").read_text())
    failed = res["methods"]["lifelonggan"]
    assert failed["complete"] is False and failed["failed"]["task"] == 2 and failed["failed"]["task_name"] == "impulse"
    assert len(failed["matrix"]) == 1  # the task it finished is kept
    assert res["methods"]["tl"]["complete"]  # trained after the failure
    assert (out / "checkpoints" / "tl" / "task4_blur.safetensors").exists()
    assert "failed at task 2 step" in summary_table(res).rows[-2][0]
    assert "Failed: diverged on task 2 (impulse)" in matrix_table(res, "lifelonggan").note
    assert "lifelonggan: FAILED" in (out / "log.txt").read_text()
    assert "Failed: diverged" in (out / "report.html").read_text()


def test_non_finite_weights_are_found():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert non_finite(net) is None
    with torch.no_grad():
        net[1].running_var[1] = float("nan")
    assert non_finite(net) == "1.running_var"


def test_divergence_names_method_task_and_step():
    cfg = make_config("smoke", methods=["tl"], lr=1e30, steps=3)
    with pytest.raises(Diverged) as e:
        train_method("tl", benchmark_for(cfg), cfg)
    assert (e.value.method, e.value.t, e.value.task) == ("tl", 0, "noise") and 1 <= e.value.step <= 3
    assert str(e.value).startswith(f"tl diverged on task 1 (noise) at step {e.value.step}: ")
