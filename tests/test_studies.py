"""`assocgan study {quota,order,lambda,ablation}` on the smoke preset with tiny settings: the runs each
study makes, parallel workers, resuming, failures, and the table, plot and report it writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from assocgan import jobs, studies
from assocgan.cli import main
from assocgan.config import make_config
from assocgan.errors import UserError
from assocgan.methods import METHODS, Option
from assocgan.methods.tl import TL
from assocgan.report.tables import to_text
from assocgan.studies.ablation import ABLATION_ROWS, ablation_runs
from assocgan.studies.order import parse_orders
from assocgan.studies.quota import quota_table
from assocgan.studies.sweep import lambda_runs, lambda_table, sweep_values

TASKS = ["noise", "impulse", "oversharpen", "blur"]
TINY = dict(size=16, steps=2, n_train=4, n_test=2, batch_size=2, ngf=4, ndf=4, sample_images=1, threads=1)
TINY_ARGS = ["--preset", "smoke", "--size", "16", "--steps", "2", "--n-train", "4", "--n-test", "2", "--batch-size", "2", "--ngf", "4", "--ndf", "4"]


def base(methods=("tl",), **kw):
    return make_config("smoke", methods=list(methods), **{**TINY, **kw})


def quiet(fn, *a, **kw):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*a, **kw)
    return out, buf.getvalue()


class Sweepable(TL):
    """A test method with a numeric option: a penalty that pulls outputs to grey; 13 makes it fail."""

    name = "sweeptest"
    title = "Sweep test"
    options = (Option("strength", 1.0, "weight of the pull to grey"), Option("flag", True, "a bool option"))

    def generator_loss(self, step):
        if self.settings.strength == 13:
            raise RuntimeError("unlucky strength")
        return self.settings.strength * ((step.fake.float() - 0.5) ** 2).mean()


@pytest.fixture
def sweepable(monkeypatch):
    monkeypatch.setitem(METHODS, "sweeptest", Sweepable)
    return "sweeptest"


# ---- quota: through the CLI, two workers in parallel, then resumed ------------------------------
@pytest.fixture(scope="module")
def quota_dir(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("quota") / "study"
    code, printed = quiet(main, ["study", "quota", *TINY_ARGS, "--methods", "tl,jl", "--jobs", "2", "--out", str(out)])
    assert code == 0, printed
    return out, printed


def test_quota_study_runs_each_method_as_a_run_folder(quota_dir):
    out, _ = quota_dir
    for m in ("tl", "jl"):
        res = json.loads((out / "runs" / m / "results.json").read_text())
        assert res["methods"][m]["complete"] and list(res["methods"]) == [m]
        assert res["config"]["threads"] == 1  # the smoke preset's, else cores // jobs (below)
        assert (out / "runs" / m / "report.html").exists() and (out / "runs" / m / "log.txt").exists()
        assert json.loads((out / "runs" / m / "run.json").read_text())["config"]["steps"] == 2


class _FakeWorker:
    """Stands in for a worker process: records how it was started, finishes at its second poll."""

    started: list[dict] = []
    running = 0
    most = 0

    def __init__(self, cmd, stdout=None, stderr=None, env=None):
        cls = type(self)
        cls.started.append({"cmd": cmd, "env": env})
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        self.polls, self.returncode = 0, None

    def poll(self):
        self.polls += 1
        if self.polls >= 2 and self.returncode is None:
            self.returncode = 0
            type(self).running -= 1
        return self.returncode

    def terminate(self):  # pragma: no cover - only if the loop is interrupted
        pass


def test_parallel_jobs_share_the_cores(tmp_path, monkeypatch):
    """With --jobs N each worker gets cores // N torch threads (at least 1), told through its run.json and its
    environment; at most N run at once; one job runs in this process on all cores; --threads is kept."""
    import subprocess
    import sys

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(jobs, "gpu_ids", lambda: ["0"])  # one GPU: every worker finds it as it is
    cfg = base(("tl", "jl", "replay"), threads=0)
    study = studies.make_study("quota", cfg, tmp_path / "s", methods=["tl", "jl", "replay"])
    assert [c.threads for _, c in studies.plan(study, 2)] == [4, 4, 4]
    assert [c.threads for _, c in studies.plan(study, 3)] == [2, 2, 2]
    assert [c.threads for _, c in studies.plan(study, 16)] == [1, 1, 1]  # never none
    assert [c.threads for _, c in studies.plan(study, 1)] == [0, 0, 0]  # in this process: all cores
    asked = studies.make_study("quota", base(("tl",), threads=3), tmp_path / "t", methods=["tl"])
    assert [c.threads for _, c in studies.plan(asked, 2)] == [3]  # as asked

    _FakeWorker.started, _FakeWorker.running, _FakeWorker.most = [], 0, 0
    monkeypatch.setattr(subprocess, "Popen", _FakeWorker)
    failed = studies.run_all(study, 2, say=lambda s: None)
    assert failed == [] and len(_FakeWorker.started) == 3 and _FakeWorker.most == 2
    for spec, started in zip(study.runs, _FakeWorker.started):
        run_dir = study.run_dir(spec)
        assert started["cmd"] == [sys.executable, "-m", "assocgan.jobs", str(run_dir)]
        assert "CUDA_VISIBLE_DEVICES" not in started["env"] or started["env"]["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")
        assert started["env"]["OMP_NUM_THREADS"] == "4" and started["env"]["MKL_NUM_THREADS"] == "4"
        assert json.loads((run_dir / "run.json").read_text())["config"]["threads"] == 4
    # the worker runs with the threads of its run.json, and training sets torch's thread count from them
    got = []
    monkeypatch.setattr(jobs, "execute", lambda run_dir, cfg, bench_args, device: got.append(cfg))
    assert jobs.worker(str(study.run_dir(study.runs[0]))) == 0
    assert got[0].threads == 4 and got[0].methods == ["tl"]
    from assocgan.train import set_threads

    set_threads(got[0])
    assert torch.get_num_threads() == 4


def test_quota_study_writes_table_plot_and_report(quota_dir):
    out, printed = quota_dir
    study = json.loads((out / "study.json").read_text())
    assert study["study"] == "quota" and study["command"].startswith("assocgan study quota")
    s = study["summary"]
    assert s["tasks"] == TASKS and s["metric"] == "psnr"
    assert [m["name"] for m in s["methods"]] == ["tl", "jl"]
    assert all(len(m["avg"]) == 4 and m["complete"] for m in s["methods"])
    assert [r["status"] for r in s["runs"]] == ["done", "done"]
    assert "Quota" in printed and "Four tasks" in printed and "Report:" in printed
    assert (out / "plots" / "quota.png").stat().st_size > 5000
    page = (out / "report.html").read_text()
    assert 'alt="quota"' in page and "Runs of this study" in page and page.count("<table") >= 4


def test_quota_study_resumes_without_training_again(quota_dir):
    out, _ = quota_dir
    before = {m: (out / "runs" / m / "results.json").stat().st_mtime_ns for m in ("tl", "jl")}
    code, printed = quiet(main, ["study", "quota", *TINY_ARGS, "--methods", "tl,jl", "--jobs", "2", "--out", str(out)])
    assert code == 0
    assert "2 already done, 0 to run" in printed
    assert before == {m: (out / "runs" / m / "results.json").stat().st_mtime_ns for m in ("tl", "jl")}


def _results(out: Path, run: str) -> dict:
    return json.loads((out / "runs" / run / "results.json").read_text())


def test_a_study_through_submitits_local_executor_matches_and_resumes(quota_dir, tmp_path):
    """The same study as quota_dir's, its runs as jobs of submitit's local executor: the same numbers. Then one run
    is left as a killed job leaves it (its first task only): the study started again runs that one alone."""
    ref, _ = quota_dir
    out = tmp_path / "study"
    args = ["study", "quota", *TINY_ARGS, "--methods", "tl,jl", "--executor", "local", "--jobs", "2", "--time-limit", "10", "--out", str(out)]
    code, printed = quiet(main, args)
    assert code == 0, printed
    assert "0 already done, 2 to run, 2 at a time through submitit's local executor" in printed
    for m in ("tl", "jl"):
        got, want = _results(out, m)["methods"][m], _results(ref, m)["methods"][m]
        assert got["complete"] and len(got["matrix"]) == 4
        for row, ref_row in zip(got["matrix"], want["matrix"]):
            assert row == pytest.approx(ref_row, abs=1e-9)
        assert "start:" in (out / "runs" / m / "log.txt").read_text()  # the job's output went to the run's log
    assert len(list((out / "jobs").glob("*_0_log.out"))) == 2  # submitit's own files, one set a job

    res = _results(out, "jl")
    entry = res["methods"]["jl"]
    entry.update(complete=False, matrix=entry["matrix"][:1], psnr=entry["psnr"][:1], ssim=entry["ssim"][:1])
    (out / "runs" / "jl" / "results.json").write_text(json.dumps(res))
    code, printed = quiet(main, args)
    assert code == 0, printed
    assert "1 already done, 1 to run" in printed and "[1/1] JL: done" in printed
    assert len(_results(out, "tl")["provenance"]) == 1 and len(_results(out, "jl")["provenance"]) == 2  # tl was not run again
    again = _results(out, "jl")["methods"]["jl"]
    assert again["complete"] and again["matrix"][-1] == pytest.approx(_results(ref, "jl")["methods"]["jl"]["matrix"][-1], abs=1e-9)
    assert [r["status"] for r in json.loads((out / "study.json").read_text())["summary"]["runs"]] == ["done", "done"]


def test_a_study_folder_made_with_other_settings_is_refused(quota_dir, capsys):
    out, _ = quota_dir
    study = (out / "study.json").read_text()
    args = [a if a != "2" else "3" for a in TINY_ARGS]  # --steps 3 (and the other 2s)
    assert main(["study", "quota", *args, "--methods", "tl", "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert (out / "study.json").read_text() == study  # nothing rewritten
    assert main(["study", "order", *TINY_ARGS, "--methods", "tl", "--out", str(out)]) == 2
    assert "holds a quota study" in capsys.readouterr().err


def test_report_command_rebuilds_a_study_folder(quota_dir):
    out, _ = quota_dir
    (out / "report.html").unlink()
    (out / "plots" / "quota.png").unlink()
    code, printed = quiet(main, ["report", str(out)])
    assert code == 0 and printed.strip().endswith("report.html")
    assert (out / "plots" / "quota.png").exists() and "assocgan study: quota" in (out / "report.html").read_text()


# ---- order ---------------------------------------------------------------------------------
def test_parse_orders():
    assert parse_orders(None, TASKS) == ["1,2,3,4", "2,3,4,1", "3,4,1,2", "4,1,2,3"]
    assert parse_orders("4,3,2,1; noise,impulse,blur,oversharpen", TASKS) == ["4,3,2,1", "1,2,4,3"]
    for bad in ("1,2,3", "1,1,2,3", "1,2,3,5", "1,2,3,4;1,2,3,4", "rain,1,2,3"):
        with pytest.raises(UserError):
            parse_orders(bad, TASKS)


def test_order_study(tmp_path):
    st = studies.make_study("order", base(), tmp_path / "order", methods=["tl"], orders="1,2,3,4;4,3,2,1")
    assert [r.name for r in st.runs] == ["tl_order1-2-3-4", "tl_order4-3-2-1"]
    assert [r.cfg.order for r in st.runs] == ["1,2,3,4", "4,3,2,1"]
    record, printed = quiet(studies.run_study, st, jobs=1)
    s = record["summary"]
    (m,) = s["methods"]
    assert [r["tasks"] for r in m["runs"]] == [TASKS, TASKS[::-1]]
    assert all(len(r["final"]) == 4 and r["complete"] for r in m["runs"])
    assert m["mean_by_position"][0] == pytest.approx((m["runs"][0]["final"][0] + m["runs"][1]["final"][0]) / 2)
    # the last task of an order is the one it saw last: reversed order, noise comes last
    res = json.loads((tmp_path / "order" / "runs" / "tl_order4-3-2-1" / "results.json").read_text())
    assert res["tasks"] == TASKS[::-1] and res["methods"]["tl"]["matrix"][-1] == m["runs"][1]["final"]
    text = printed
    assert "Task order" in text and "oversharpen" in text and "mean" in text
    assert (tmp_path / "order" / "plots" / "order.png").exists()


def test_order_study_refuses_a_base_order(tmp_path):
    with pytest.raises(UserError, match="--orders"):
        studies.make_study("order", base(order="2,1,3,4"), tmp_path / "o", methods=["tl"])


# ---- lambda: a sweep of any numeric option, here of a test method ------------------------------
def test_sweep_values(sweepable):
    assert sweep_values(sweepable, "strength", None) == pytest.approx([0, 0.1, 0.3, 1, 3, 10])
    assert sweep_values(sweepable, "strength", "2, 0.5,2") == [0.5, 2.0]
    with pytest.raises(UserError, match="no such option"):
        sweep_values(sweepable, "nope", None)
    with pytest.raises(UserError, match="numeric"):
        sweep_values(sweepable, "flag", None)
    with pytest.raises(UserError):
        sweep_values(sweepable, "strength", "1,x")


def test_lambda_run_names_keep_large_and_small_values_apart(sweepable):
    from assocgan.config import make_config

    runs = lambda_runs(make_config("smoke"), sweepable, "strength", [3e-6, 0.5, 3e6])
    names = [r.name for r in runs]
    assert len(set(names)) == 3 and "3e06" in names[2] and "3e-06" in names[0]


def test_lambda_study_and_a_failed_run(sweepable, tmp_path):
    out = tmp_path / "lambda"
    st = studies.make_study("lambda", base([sweepable]), out, method=sweepable, option="strength", values="0,13,2")
    assert [r.label for r in st.runs] == ["--strength 0", "--strength 2", "--strength 13"]
    assert [r.cfg.method_options[sweepable]["strength"] for r in st.runs] == [0.0, 2.0, 13.0]
    with pytest.raises(UserError, match="1 of 3 runs failed"):
        quiet(studies.run_study, st, jobs=1)
    assert "unlucky strength" in (out / "runs" / "sweeptest_strength=13" / "log.txt").read_text()
    record = json.loads((out / "study.json").read_text())
    rows = record["summary"]["rows"]
    assert [r["value"] for r in rows] == [0.0, 2.0, 13.0]
    assert rows[0]["complete"] and rows[1]["complete"] and not rows[2]["complete"]
    assert record["summary"]["prior_tasks"] == TASKS[:3]
    r0 = rows[0]
    assert r0["prior_mean"] == pytest.approx(sum(r0["final"][:3]) / 3) and r0["last"] == r0["final"][3]
    assert (out / "plots" / "lambda.png").exists() and (out / "report.html").exists()
    text = to_text(lambda_table(record["summary"]))
    assert "--strength" in text and "13 (partial)" in text and "below input" in text
    assert rows[0]["below"] and rows[1]["below"] and rows[2]["below"] == ""  # "none" or the tasks; unknown for a partial run
    # the sweep of the real thing, as soon as Assoc-GAN is registered
    if "assoc" in METHODS:
        st = studies.make_study("lambda", base(["assoc"]), tmp_path / "l2")
        assert st.params["option"] == "lambda_distill" and 0 in st.params["values"] and len(st.runs) >= 3
        # lambda' acts only with the distillation on (off by default): every run of its sweep turns it on
        assert all(r.cfg.method_options["assoc"]["distill"] is True for r in st.runs)
        assert all(r.how.startswith("assoc --distill on --lambda-distill") for r in st.runs)


# ---- ablation ------------------------------------------------------------------------------
def test_ablation_backbone_rows(tmp_path):
    """Rows 1-3 of Table 3 (TL variants) run here; rows 4-6 need Assoc-GAN (next test)."""
    st = studies.make_study("ablation", base(), tmp_path / "abl", rows=ABLATION_ROWS[:3])
    assert [(r.cfg.lambda_content, r.cfg.lambda_adv) for r in st.runs] == [(0.0, 1e-3), (1.0, 0.0), (1.0, 1e-3)]
    record, printed = quiet(studies.run_study, st, jobs=1)
    rows = record["summary"]["rows"]
    assert [r["label"] for r in rows] == ["Backbone", "Backbone+Lmse", "Backbone+Lmse+Ladv"]
    assert all(r["complete"] and r["psnr"] > 0 and 0 < r["ssim"] <= 1 for r in rows)
    res = json.loads((tmp_path / "abl" / "runs" / st.runs[0].name / "results.json").read_text())
    assert rows[0]["psnr"] == pytest.approx(sum(res["methods"]["tl"]["psnr"][-1]) / 4)
    ident, last = res["identity"]["psnr"], res["methods"]["tl"]["psnr"][-1]
    assert rows[0]["below"] == (",".join(f"T{j + 1}" for j, v in enumerate(last) if v < ident[j]) or "none")  # as a run's summary says it
    assert "Ablation" in printed and "PSNR" in printed and "SSIM" in printed and "below input" in printed
    assert (tmp_path / "abl" / "plots" / "ablation.png").exists()


@pytest.mark.parametrize("preset", ["quick", "smoke"])
def test_every_ablation_row_is_a_distinct_run_with_the_terms_its_label_names(tmp_path, preset):
    """At the default preset (no adversarial term) as at one with it, "Backbone" is the adversarial loss alone
    (no content loss: the paper's text), each "+Ladv" row has an adversarial weight and no other row has one,
    "Lmse" is the content loss, "Lfeature" the distillation and "Heuristics" the association samples."""
    from assocgan.config import make_config

    cfg = make_config(preset, methods=["tl", "assoc"], threads=1)
    runs = ablation_runs(cfg)
    assert len(runs) == 6
    seen = set()
    for r in runs:
        label, c = r.label, r.cfg
        terms = set(label.split("+"))
        assert (c.lambda_adv > 0) == ("Ladv" in terms or label == "Backbone"), label
        assert (c.lambda_content > 0) == ("Lmse" in terms), label
        opts = c.method_options.get("assoc")
        if opts is not None:
            assert opts["heuristics"] == ("Heuristics" in terms) and opts["distill"] == ("Lfeature" in terms), label
        else:
            assert "Heuristics" not in terms and "Lfeature" not in terms
        key = json.dumps({"methods": c.methods, "adv": c.lambda_adv, "mse": c.lambda_content, "opts": c.method_options}, sort_keys=True)
        assert key not in seen, label
        seen.add(key)
        assert ("--lambda-adv 0 " in r.how + " ") == (c.lambda_adv == 0), r.how  # "as run" spells the weights


@pytest.mark.skipif("assoc" not in METHODS, reason="Assoc-GAN (methods/assoc.py) is not registered yet")
def test_ablation_rows_of_assoc(tmp_path):
    st = studies.make_study("ablation", base(["tl", "assoc"]), tmp_path / "abl")
    assert len(st.runs) == 6
    opts = [r.cfg.method_options.get("assoc") for r in st.runs[3:]]
    assert [(o["heuristics"], o["distill"]) for o in opts] == [(False, True), (True, False), (True, True)]
    assert all(r.cfg.methods == ["tl"] for r in st.runs[:3]) and all(r.cfg.methods == ["assoc"] for r in st.runs[3:])
    # the CLI builds the same runs, with assoc's own flags passed through
    from assocgan.cli import build_parser, config_from_args

    args = build_parser().parse_args(["study", "ablation", *TINY_ARGS, "--mapper-steps", "3"])
    args.methods = "tl,assoc"
    cfg = config_from_args(args)
    st2 = studies.make_study("ablation", cfg, tmp_path / "abl2")
    assert all(r.cfg.method_options["assoc"]["mapper_steps"] == 3 for r in st2.runs[3:])


def test_unknown_study_and_bad_jobs(tmp_path):
    with pytest.raises(UserError):
        studies.make_study("nope", base(), tmp_path)
    st = studies.make_study("quota", base(), tmp_path / "q", methods=["tl"])
    with pytest.raises(UserError, match="--jobs"):
        studies.run_study(st, jobs=0)


def test_quota_study_over_seeds(tmp_path):
    out = tmp_path / "quota_seeds"
    code, printed = quiet(main, ["study", "quota", *TINY_ARGS, "--threads", "1", "--methods", "tl", "--seeds", "0,1", "--out", str(out)])
    assert code == 0, printed
    run_dir = out / "runs" / "tl"
    per = [json.loads((run_dir / f"seed{s}" / "results.json").read_text())["methods"]["tl"]["final_avg"] for s in (0, 1)]
    combined = json.loads((run_dir / "results.json").read_text())
    assert combined["seeds"] == [0, 1] and combined["methods"]["tl"]["per_seed"]["final_avg"] == per
    study = json.loads((out / "study.json").read_text())
    assert study["params"]["seeds"] == [0, 1]
    assert study["summary"]["methods"][0]["final_avg"] == pytest.approx(sum(per) / 2)  # the study reads the mean
    # ... and its table gives each average after a task as mean ± sd over the two seeds
    avgs = [json.loads((run_dir / f"seed{s}" / "results.json").read_text())["methods"]["tl"]["avg"] for s in (0, 1)]
    table = quota_table(study["summary"])
    last = table.rows[0][len(avgs[0])]
    assert f"{statistics.fmean(a[-1] for a in avgs):.2f} ± {statistics.stdev(a[-1] for a in avgs):.2f}" == last
    assert "Mean ± sd over 2 seeds (0, 1)" in table.note
    assert studies.pending_methods(run_dir, base(), [0, 1]) == []
    assert studies.pending_methods(run_dir, base(), [0, 1, 2]) == ["tl"]
