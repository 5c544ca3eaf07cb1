"""How a study's runs are executed (assocgan.jobs): executor options and their errors, time limits, one GPU per
worker, the sbatch script submitit writes for SLURM, and stopping what runs when interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from assocgan import jobs, studies
from assocgan.cli import main
from assocgan.config import make_config
from assocgan.errors import UserError

TINY_ARGS = ["--preset", "smoke", "--size", "16", "--steps", "2", "--n-train", "4", "--n-test", "2", "--batch-size", "2", "--ngf", "4", "--ndf", "4"]


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("0:45", 1), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160), ("1-00:30", 1470)])
def test_time_limit_as_sbatch_reads_it(text, minutes):
    assert jobs.parse_time_limit(text) == minutes


@pytest.mark.parametrize("text", ["abc", "1h", "1:2:3:4", "-5", "1-2:3:4:5", "", "1.5"])
def test_bad_time_limit_names_the_option(text):
    with pytest.raises(UserError, match=r"^--time-limit .*sbatch"):
        jobs.parse_time_limit(text)


def test_zero_time_limit_is_refused():
    with pytest.raises(UserError, match="--time-limit '0:00:00': must be more than zero"):
        jobs.parse_time_limit("0:00:00")


@pytest.mark.parametrize(
    "executor, given, message",
    [
        (None, {"partition": "gpu"}, "--partition: only with --executor slurm"),
        ("local", {"partition": "gpu"}, r"--partition: only with --executor slurm \(this study's executor is local\)"),
        (None, {"gpus_per_job": 1}, "--gpus-per-job: only with --executor slurm"),
        (None, {"slurm_setup": ["module load cuda"]}, "--slurm-setup: only with --executor slurm"),
        (None, {"time_limit": "60"}, "--time-limit: only with --executor local or --executor slurm"),
        (None, {"job_logs": "logs"}, "--job-logs: only with --executor local or --executor slurm"),
        ("slurm", {}, "--time-limit: needed with --executor slurm"),
        ("slurm", {"time_limit": "soon"}, "--time-limit 'soon'"),
        ("slurm", {"time_limit": "60", "mem": "lots"}, "--mem 'lots'"),
        ("slurm", {"time_limit": "60", "gpus_per_job": -1}, "--gpus-per-job -1: must be at least 0"),
        ("slurm", {"time_limit": "60", "cpus_per_job": 0}, "--cpus-per-job 0: must be at least 1"),
        ("slurm", {"time_limit": "60", "slurm_option": ["constraint"]}, "--slurm-option 'constraint': give KEY=VALUE"),
        ("nope", {}, "--executor 'nope'"),
    ],
)
def test_executor_option_errors_name_the_option(executor, given, message):
    with pytest.raises(UserError, match=message):
        jobs.job_options(executor, **given)


def test_executor_options_are_kept():
    o = jobs.job_options(
        "slurm", time_limit="2:00:00", partition="gpu", gpus_per_job=1, cpus_per_job=8, mem="32G", slurm_option=["constraint=a100", "mail-type=END"]
    )
    assert (o.executor, o.time_limit_min, o.partition, o.gpus_per_job, o.cpus_per_job, o.mem) == ("slurm", 120, "gpu", 1, 8, "32G")
    assert o.slurm_option == {"constraint": "a100", "mail_type": "END"}
    assert jobs.job_options("local").time_limit_min is None and jobs.job_options().executor is None


def test_cli_refuses_slurm_options_without_slurm_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "quota", *TINY_ARGS, "--methods", "tl", "--partition", "gpu", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "assocgan: error: --partition: only with --executor slurm"
    assert main(["study", "lambda", *TINY_ARGS, "--executor", "local", "--time-limit", "1:2:3:4", "--out", str(out)]) == 2
    assert "--time-limit '1:2:3:4'" in capsys.readouterr().err
    assert main(["study", "ablation", *TINY_ARGS, "--executor", "slurm", "--out", str(out)]) == 2
    assert "--time-limit: needed with --executor slurm" in capsys.readouterr().err
    assert not out.exists()


def test_slurm_job_script_holds_the_options(tmp_path, monkeypatch):
    """The sbatch script submitit writes for each run (submitit needs srun to exist: pretend it does)."""
    import submitit.slurm.slurm as slurm

    o = jobs.job_options(
        "slurm",
        time_limit="1:30:00",
        partition="gpu",
        account="lab",
        qos="high",
        gpus_per_job=1,
        cpus_per_job=8,
        mem="32G",
        slurm_setup=["source venv/bin/activate"],
        slurm_option=["constraint=a100"],
        job_logs=tmp_path / "logs",
    )
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    script = jobs.Submitit(o, tmp_path / "study", "assocgan-quota").executor._make_submission_file_text("python -m x", "uid")
    for line in (
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32G",
        "--time=90",
        "--constraint=a100",
        "--job-name=assocgan-quota",
        "--nodes=1",
        "--ntasks-per-node=1",
        f"--output={tmp_path / 'logs'}/%j_0_log.out",
    ):
        assert f"#SBATCH {line}\n" in script
    assert "\nsource venv/bin/activate\n" in script
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    with pytest.raises(UserError, match="--executor slurm: SLURM is not found here"):
        jobs.Submitit(o, tmp_path / "study", "x")


# ---- GPUs ----------------------------------------------------------------------------------------
def test_gpu_ids_follow_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert jobs.gpu_ids() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert jobs.gpu_ids() == ["2", "3"]
    assert jobs.gpus_to_share(None, None) == ["2", "3"] and jobs.gpus_to_share("cuda", None) == ["2", "3"]
    assert jobs.gpus_to_share("cpu", None) == [] and jobs.gpus_to_share("cuda:1", None) == []  # a named device must exist in every job
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert jobs.gpus_to_share(None, None) == []  # one GPU: every worker finds it as it is
    assert jobs.gpus_to_share(None, "local") == ["2"]  # submitit's local executor shows a job only the GPUs it is given


def test_gpu_slots_go_round():
    slots = jobs.GpuSlots(["0", "1"])
    assert [slots.take(), slots.take(), slots.take()] == ["0", "1", "0"]
    slots.give_back("1")
    assert slots.take() == "1"
    assert jobs.GpuSlots([]).take() is None


class _FakeProcess:
    """Stands in for a worker process: records its GPU, finishes at its second poll."""

    log: list[tuple[str, str | None]] = []
    busy: list[str] = []

    def __init__(self, cmd, stdout=None, stderr=None, env=None):
        self.gpu = env.get("CUDA_VISIBLE_DEVICES")
        assert self.gpu is None or self.gpu not in type(self).busy, "two workers on one GPU"
        type(self).busy.append(self.gpu)
        type(self).log.append((Path(cmd[-1]).name, self.gpu))
        self.polls, self.returncode = 0, None

    def poll(self):
        self.polls += 1
        if self.polls >= 2 and self.returncode is None:
            self.returncode = 0
            type(self).busy.remove(self.gpu)
        return self.returncode


def test_parallel_workers_each_get_their_own_gpu(tmp_path, monkeypatch):
    """--jobs 2 on a machine with two GPUs (faked): each worker sees one GPU, never one another worker uses; a third
    run takes the GPU the first to end gave back."""
    monkeypatch.setattr(jobs, "gpu_ids", lambda: ["0", "1"])
    monkeypatch.setattr(subprocess, "Popen", _FakeProcess)
    _FakeProcess.log, _FakeProcess.busy = [], []
    cfg = make_config("smoke", methods=["tl"], size=16, steps=2, n_train=4, n_test=2, batch_size=2, ngf=4, ndf=4)
    study = studies.make_study("quota", cfg, tmp_path / "s", methods=["tl", "jl", "replay"])
    assert studies.run_all(study, 2, say=lambda s: None) == []
    assert _FakeProcess.log == [("tl", "0"), ("jl", "1"), ("replay", "0")]
    # on the CPU, or with one GPU, nothing is hidden from a worker
    _FakeProcess.log = []
    study_cpu = studies.make_study("quota", cfg, tmp_path / "c", methods=["tl", "jl"], device="cpu")
    assert studies.run_all(study_cpu, 2, say=lambda s: None) == []
    assert len(_FakeProcess.log) == 2 and all(g == os.environ.get("CUDA_VISIBLE_DEVICES") for _, g in _FakeProcess.log)


class _Engine:
    """An engine whose runs never end; polling the second time is interrupted, as by Ctrl-C."""

    def __init__(self):
        self.started, self.stopped, self.polls = [], [], 0

    def start(self, run_dir, threads, gpu):
        self.started.append(run_dir)
        return run_dir

    def poll(self, handle):
        self.polls += 1
        if self.polls > 2:
            raise KeyboardInterrupt
        return None

    def stop(self, handle):
        self.stopped.append(handle)


def test_an_interrupted_study_stops_its_runs():
    eng = _Engine()
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs([(Path("a"), 1), (Path("b"), 1), (Path("c"), 1)], 2, eng, [], lambda *a: None, poll_s=0)
    assert eng.started == [Path("a"), Path("b")] and eng.stopped == [Path("a"), Path("b")]


def test_a_run_s_time_counts_from_before_its_start_even_when_the_engine_runs_it_there():
    class InPlace:  # as the in-process engine: the whole run happens in start
        def start(self, run_dir, threads, gpu):
            time.sleep(0.05)
            return True

        def poll(self, handle):
            return handle, ""

    seen = []
    jobs.run_jobs([(Path("a"), 1)], 1, InPlace(), [], lambda run_dir, ok, seconds, where: seen.append(seconds), poll_s=0)
    assert len(seen) == 1 and seen[0] >= 0.05


class _Terminated(_Engine):
    """An engine whose runs never end; polling the second time, the study's process is sent SIGTERM (or SIGHUP)."""

    def __init__(self, signum):
        super().__init__()
        self.signum = signum

    def poll(self, handle):
        self.polls += 1
        if self.polls == 3:
            os.kill(os.getpid(), self.signum)
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_study_sent_sigterm_or_sighup_stops_its_runs_and_restores_the_handler(signum):
    class Unhandled(Exception):
        pass

    def outside(signum, frame):  # what the signal does outside run_jobs here (by default it would end the tests)
        raise Unhandled

    before = signal.signal(signum, outside)
    try:
        eng = _Terminated(signum)
        with pytest.raises(KeyboardInterrupt):
            jobs.run_jobs([(Path("a"), 1), (Path("b"), 1), (Path("c"), 1)], 2, eng, [], lambda *a: None, poll_s=0)
        assert eng.started == [Path("a"), Path("b")] and eng.stopped == [Path("a"), Path("b")]
        assert signal.getsignal(signum) is outside
    finally:
        signal.signal(signum, before)


def test_worker_exit_codes(tmp_path, capsys):
    """One place maps errors to exit codes: the worker gives 2 and one line for bad input, as the CLI does."""
    assert jobs.worker(tmp_path) == 2
    assert capsys.readouterr().err.strip() == f"assocgan: error: {tmp_path / 'run.json'}: missing; it is written by `assocgan study`"
