"""How a study's runs are executed, each from its run folder's ``run.json``.

- In this process, one after the other (``--jobs 1``, the default).
- As local worker processes, ``--jobs N`` at a time (``python -m assocgan.jobs RUN_DIR``), sharing the cores;
  with several GPUs each worker gets its own (``CUDA_VISIBLE_DEVICES``, the least busy GPU first).
- As jobs of submitit (``--executor local|slurm``): its local executor (processes of this machine, each given a
  GPU as above) or SLURM (``--partition``, ``--gpus-per-job``, ``--time-limit``, ...), at most ``--jobs N``
  submitted at a time (with SLURM, by default every run at once). The study waits for its jobs; interrupted, it
  cancels those still queued or running.

Whatever runs it, a run's output goes to its ``log.txt``, and a run folder keeps what was complete: a study
started again runs only what is not.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import INTERRUPTED, UserError, exit_code, is_whole_number
from .io import read_json
from .runfolder import LOG

RUN_SPEC = "run.json"
EXECUTORS = ("local", "slurm")
NO_TIME_LIMIT_MIN = 60 * 24 * 365  # submitit's local executor needs a limit (its default is 2 minutes)


# ---- one run, from its folder -------------------------------------------------------------------
def execute(run_dir: Path, cfg, bench_args: dict[str, Any], device: str | None, seeds: list[int] | None = None, tensorboard: bool | None = None) -> None:
    """One run, in this process: train ``cfg`` into ``run_dir`` (over ``seeds``, each into ``run_dir/seed<k>``)."""
    if seeds:
        from .seeds import run_seeds

        run_seeds(cfg, run_dir, seeds, device=device, tensorboard=tensorboard, **bench_args)
        return
    from .runner import run

    run(cfg, run_dir, device=device, tensorboard=tensorboard, **bench_args)


def run_from_folder(run_dir: str | Path) -> None:
    """The run described by ``RUN_DIR/run.json``."""
    from .config import RunConfig

    spec = read_json(Path(run_dir) / RUN_SPEC)
    if spec is None:
        raise UserError(f"{Path(run_dir) / RUN_SPEC}: missing; it is written by `assocgan study`")
    extra = {k: spec[k] for k in ("seeds", "tensorboard") if spec.get(k) is not None}  # what a study adds only where it is given
    execute(Path(run_dir), RunConfig(**spec["config"]), spec.get("bench_args") or {}, spec.get("device"), **extra)


def worker(run_dir: str | Path) -> int:
    """``python -m assocgan.jobs RUN_DIR``: the run of RUN_DIR/run.json; its exit code."""
    return exit_code(lambda: run_from_folder(run_dir) or 0)


def logged_worker(run_dir: str) -> int:
    """A submitit job: the worker with its output appended to the run's log.txt."""
    with open(Path(run_dir) / LOG, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        return worker(run_dir)


# ---- options --------------------------------------------------------------------------------------
SLURM_FLAGS = {
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "gpus_per_job": "--gpus-per-job",
    "cpus_per_job": "--cpus-per-job",
    "mem": "--mem",
    "slurm_setup": "--slurm-setup",
    "slurm_option": "--slurm-option",
}
EXECUTOR_FLAGS = {"time_limit": "--time-limit", "job_logs": "--job-logs"}


@dataclass(frozen=True)
class JobOptions:
    """How a study's runs are executed: ``executor`` None (this process, or local worker processes) or one of
    ``EXECUTORS``, with that executor's settings."""

    executor: str | None = None
    time_limit_min: int | None = None
    job_logs: Path | None = None  # submitit's files (job scripts, stdout/stderr); default OUT/jobs
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    mem: str | None = None
    slurm_setup: tuple[str, ...] = ()
    slurm_option: dict[str, str] = field(default_factory=dict)


def parse_time_limit(text: str) -> int:
    """A time limit as sbatch reads it, in whole minutes (rounded up): ``90`` (minutes), ``M:S``, ``H:M:S``,
    ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    bad = UserError(f"--time-limit {text!r}: give minutes (90) or a time as sbatch reads it: 1:30:00 (H:M:S), 2-00:00 (D-H:M)")
    days, dash, rest = text.strip().partition("-") if "-" in text else ("", "", text.strip())
    parts = rest.split(":")
    if not all(is_whole_number(p) for p in parts) or (dash and not is_whole_number(days)):
        raise bad
    vals = [int(p) for p in parts]
    if dash:
        if len(vals) > 3:
            raise bad
        h, m, s = (vals + [0, 0])[:3]
        seconds = ((int(days) * 24 + h) * 60 + m) * 60 + s
    elif len(vals) == 1:
        seconds = vals[0] * 60
    elif len(vals) == 2:
        seconds = vals[0] * 60 + vals[1]
    elif len(vals) == 3:
        seconds = (vals[0] * 60 + vals[1]) * 60 + vals[2]
    else:
        raise bad
    if seconds <= 0:
        raise UserError(f"--time-limit {text!r}: must be more than zero")
    return -(-seconds // 60)


def job_options(
    executor: str | None = None,
    *,
    time_limit: str | None = None,
    job_logs: str | Path | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    gpus_per_job: int | None = None,
    cpus_per_job: int | None = None,
    mem: str | None = None,
    slurm_setup: list[str] | None = None,
    slurm_option: list[str] | None = None,
) -> JobOptions:
    """The executor options of the command line, checked: each error names its option."""
    given = {
        "time_limit": time_limit,
        "job_logs": job_logs,
        "partition": partition,
        "account": account,
        "qos": qos,
        "gpus_per_job": gpus_per_job,
        "cpus_per_job": cpus_per_job,
        "mem": mem,
        "slurm_setup": slurm_setup,
        "slurm_option": slurm_option,
    }
    if executor is not None and executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: choose {' or '.join(EXECUTORS)}")
    for key, flag in SLURM_FLAGS.items():
        if given[key] not in (None, []) and executor != "slurm":
            raise UserError(f"{flag}: only with --executor slurm" + (f" (this study's executor is {executor})" if executor else ""))
    for key, flag in EXECUTOR_FLAGS.items():
        if given[key] is not None and executor is None:
            raise UserError(f"{flag}: only with --executor local or --executor slurm")
    if executor == "slurm" and time_limit is None:
        raise UserError("--time-limit: needed with --executor slurm (each job's limit; without it submitit asks SLURM for 5 minutes)")
    for key in ("gpus_per_job", "cpus_per_job"):
        if given[key] is not None and given[key] < (0 if key == "gpus_per_job" else 1):
            raise UserError(f"{SLURM_FLAGS[key]} {given[key]}: must be at least {0 if key == 'gpus_per_job' else 1}")
    if mem is not None and not re.fullmatch(r"[0-9]+[KMGT]?", mem):
        raise UserError(f"--mem {mem!r}: a size as sbatch reads it, e.g. 32G or 16000M")
    extra = {}
    for item in slurm_option or []:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[a-z][a-z0-9_-]*", key.strip()):
            raise UserError(f"--slurm-option {item!r}: give KEY=VALUE with KEY an sbatch option without its dashes, e.g. constraint=a100")
        extra[key.strip().replace("-", "_")] = value.strip()
    return JobOptions(
        executor,
        parse_time_limit(time_limit) if time_limit is not None else None,
        Path(job_logs).resolve() if job_logs else None,
        partition,
        account,
        qos,
        gpus_per_job,
        cpus_per_job,
        mem,
        tuple(slurm_setup or ()),
        extra,
    )


# ---- GPUs of this machine ----------------------------------------------------------------------------
def gpu_ids() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them (those it already lists, else 0..count-1)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[:count] if listed else [str(k) for k in range(count)]


class GpuSlots:
    """Hands each job the least busy GPU of ``ids`` (the lowest first among equals): round-robin while jobs <= GPUs."""

    def __init__(self, ids: list[str]):
        self.ids = list(ids)
        self.busy = {g: 0 for g in self.ids}

    def take(self) -> str | None:
        if not self.ids:
            return None
        g = min(self.ids, key=lambda i: self.busy[i])
        self.busy[g] += 1
        return g

    def give_back(self, g: str | None) -> None:
        if g is not None:
            self.busy[g] -= 1


def gpus_to_share(device: str | None, executor: str | None) -> list[str]:
    """The GPUs this machine's jobs are spread over: none for a CPU device or a named ``cuda:K`` (it must exist in
    every job), and for worker processes only when there are several (with one, each job finds it anyway)."""
    if device is not None and device != "cuda":
        return []
    ids = gpu_ids()
    return ids if executor == "local" or len(ids) > 1 else []


# ---- engines: start a run, see whether it ended, stop it -------------------------------------------------
@dataclass
class Started:
    """A run started by an engine; ``handle`` is the engine's own (a process, a submitit job, or the outcome)."""

    run_dir: Path
    handle: Any
    gpu: str | None = None
    start: float = field(default_factory=time.perf_counter)  # when the engine was asked to start it


class InProcess:
    """Each run in this process, to its end, its output to its log.txt."""

    def start(self, run_dir: Path, threads: int, gpu: str | None) -> Any:
        with open(run_dir / LOG, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            try:
                code = worker(run_dir)
            except (Exception, SystemExit):  # one failed run must not stop the others
                fh.write(traceback.format_exc())
                return False
        if code == INTERRUPTED:
            raise KeyboardInterrupt
        return code == 0

    def poll(self, handle: Any) -> tuple[bool, str] | None:
        return handle, ""

    def stop(self, handle: Any) -> None:
        pass


class Processes:
    """Each run a ``python -m assocgan.jobs RUN_DIR`` process of this machine."""

    def start(self, run_dir: Path, threads: int, gpu: str | None) -> Any:
        fh = open(run_dir / LOG, "a", encoding="utf-8")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads or 1), MKL_NUM_THREADS=str(threads or 1))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return subprocess.Popen([sys.executable, "-m", "assocgan.jobs", str(run_dir)], stdout=fh, stderr=subprocess.STDOUT, env=env), fh

    def poll(self, handle: Any) -> tuple[bool, str] | None:
        proc, fh = handle
        if proc.poll() is None:
            return None
        fh.close()
        return proc.returncode == 0, ""

    def stop(self, handle: Any) -> None:
        proc, fh = handle
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        fh.close()


class Submitit:
    """Each run a job of submitit's local or SLURM executor."""

    def __init__(self, opts: JobOptions, folder: Path, name: str):
        try:
            import submitit
        except ImportError:
            raise UserError(f"--executor {opts.executor}: needs submitit, which is not installed; pip install 'assocgan[slurm]' (or submitit)") from None

        self.opts = opts
        logs = opts.job_logs or folder / "jobs"
        if opts.executor == "slurm":
            try:
                self.executor = submitit.SlurmExecutor(folder=str(logs), max_num_timeout=0)
            except RuntimeError as e:  # no srun: not a SLURM machine
                raise UserError(f"--executor slurm: SLURM is not found here ({e}); run the study on the cluster's login node") from None
            params: dict[str, Any] = {"job_name": name, "nodes": 1, "ntasks_per_node": 1, "time": opts.time_limit_min}
            for key, value in (
                ("partition", opts.partition),
                ("account", opts.account),
                ("qos", opts.qos),
                ("gpus_per_node", opts.gpus_per_job),
                ("cpus_per_task", opts.cpus_per_job),
                ("mem", opts.mem),
            ):
                if value is not None:
                    params[key] = value
            if opts.slurm_setup:
                params["setup"] = list(opts.slurm_setup)
            if opts.slurm_option:
                params["additional_parameters"] = dict(opts.slurm_option)
            self.executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        else:
            self.executor = submitit.LocalExecutor(folder=str(logs), max_num_timeout=0)
            self.executor.update_parameters(timeout_min=opts.time_limit_min or NO_TIME_LIMIT_MIN)

    def start(self, run_dir: Path, threads: int, gpu: str | None) -> Any:
        if self.opts.executor == "local":
            self.executor.update_parameters(gpus_per_node=0 if gpu is None else 1, visible_gpus=() if gpu is None else (int(gpu),))
        return self.executor.submit(logged_worker, str(run_dir))

    def poll(self, job: Any) -> tuple[bool, str] | None:
        if not job.done():
            return None
        where = f"job {job.job_id}, its output in {job.paths.stdout.parent}"
        try:
            code = job.result()
        except Exception as e:  # killed, timed out, or failed before the run began
            return False, f"{where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        return code == 0, where

    def stop(self, job: Any) -> None:
        with contextlib.suppress(Exception):
            job.cancel(check=False)


def engine(opts: JobOptions, jobs: int, folder: Path, name: str = "assocgan"):
    if opts.executor is not None:
        return Submitit(opts, folder, name)
    return InProcess() if jobs <= 1 else Processes()


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """While the body runs, SIGTERM and SIGHUP (a ``kill``, a closed terminal, a scheduler's stop) raise
    KeyboardInterrupt as Ctrl-C does, so that the runs a study started are stopped with it instead of left
    running without it. Only the main thread can take signals: elsewhere the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def run_jobs(
    run_dirs: list[tuple[Path, int]], jobs: int, eng, gpus: list[str], finished: Callable[[Path, bool, float, str], None], poll_s: float = 0.2
) -> None:
    """Run each ``(run_dir, threads)`` through ``eng``, at most ``jobs`` at a time, calling ``finished(run_dir, ok,
    seconds, where)`` as each ends. Interrupted (Ctrl-C, SIGTERM, SIGHUP), the runs still going are stopped."""
    queue = list(run_dirs)
    slots = GpuSlots(gpus)
    running: list[Started] = []
    with terminated_as_interrupt():
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    run_dir, threads = queue.pop(0)
                    gpu, began = slots.take(), time.perf_counter()  # before start: the in-process engine runs the whole run in it
                    running.append(Started(run_dir, eng.start(run_dir, threads, gpu), gpu, began))
                for item in list(running):
                    outcome = eng.poll(item.handle)
                    if outcome is not None:
                        running.remove(item)
                        slots.give_back(item.gpu)
                        finished(item.run_dir, outcome[0], time.perf_counter() - item.start, outcome[1])
                if running:
                    time.sleep(poll_s)
        finally:
            for item in running:  # interrupted: stop the runs this study started
                eng.stop(item.handle)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m assocgan.jobs RUN_DIR (a worker of `assocgan study`)", file=sys.stderr)
        sys.exit(2)
    sys.exit(worker(sys.argv[1]))
