"""Studies: the paper's further analyses (§4.5), each one command made of independent runs.

Each kind of study is one file of this package (``base.py`` says what it declares); ``STUDIES`` holds every kind
found there, so that adding a kind is adding a file. This module is what they share: making a study's runs,
running what is not done, collecting its numbers, and its study.json, plots and report.

A study folder holds ``study.json`` (what the study is, its runs, and the numbers collected from them),
``runs/<name>/`` (each a normal run folder: results.json, CSVs, checkpoints, samples, its own
report.html, and ``run.json`` saying how it was configured, ``log.txt`` its output), ``plots/`` and
``report.html``.

A study resumes: a run whose results.json holds complete entries for its methods, made with the same
settings, is not run again; a run folder made with other settings is an error (choose another ``--out``).
``jobs`` says how the runs are executed: in this process, as parallel worker processes (``--jobs N``, each
with ``cores // N`` torch threads and, with several GPUs, its own GPU), or as submitit jobs on this machine or
on a SLURM cluster (``--executor local|slurm``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import UserError
from ..io import read_json_file, write_json, write_text
from ..jobs import RUN_SPEC, JobOptions, engine, gpus_to_share, run_jobs
from ..metrics import DEFAULT_METRIC
from ..registry import discover
from ..report.html import REPORT, study_page, write_report
from ..report.plots import save_figure
from ..report.tables import Table
from ..results import COMPLETE, FINAL_AVG, MATRIX, METHODS, METRIC, TASKS, TRAIN_SECONDS
from ..runfolder import LOG, RunFolder, as_json, folder_lock
from ..seeds import pending, read_seeds, seed_dir, write_combined
from .base import RunSpec, StudyKind, safe_name

ORDER = ("quota", "order", "lambda", "ablation", "perceptual")
STUDY_FILE = "study.json"


def _discover() -> dict[str, StudyKind]:
    """One instance of every ``StudyKind`` subclass with a ``name`` defined in this package's modules, in the order
    of ``ORDER`` (then by name)."""
    return {name: kind() for name, kind in discover(__name__, __path__, StudyKind, ORDER, what="study").items()}


STUDIES: dict[str, StudyKind] = _discover()


@dataclass
class Study:
    kind: str
    folder: Path
    base: RunConfig
    runs: list[RunSpec]
    params: dict[str, Any] = field(default_factory=dict)
    bench_args: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    command: str | None = None
    note: str | None = None  # a warning about the study's data, said once at its start
    tensorboard: bool | None = None  # runner.run's: None, when installed
    seeds: list[int] | None = None  # each run over these seeds (runs/<name>/seed<k>/, combined in runs/<name>/results.json)

    def run_dir(self, spec: RunSpec) -> Path:
        return self.folder / "runs" / spec.name


# ---- building the runs --------------------------------------------------------------------
def task_names(base: RunConfig, bench_args: dict[str, Any]) -> list[str]:
    """The benchmark's task names in its own order (cheap for the built-in benchmarks)."""
    from ..data.benchmarks import BUILTIN, load_benchmark

    if not any(bench_args.get(k) for k in ("data", "clean_images", "recipe")) and base.benchmark in BUILTIN:
        return [t for t, _ in BUILTIN[base.benchmark].tasks]
    args = {k: v for k, v in bench_args.items() if k in ("data", "clean_images", "recipe", "metric")}
    return load_benchmark(base.benchmark, size=16, n_train=1, n_test=1, seed=base.seed, **args).task_names


def _builtin_metric(base: RunConfig, bench_args: dict[str, Any]) -> str:
    from ..data.benchmarks import BUILTIN

    if not (bench_args.get("data") or bench_args.get("clean_images")) and base.benchmark in BUILTIN:
        return BUILTIN[base.benchmark].metric
    return DEFAULT_METRIC


# ---- running ---------------------------------------------------------------------------
def read_results(run_dir: Path) -> dict | None:
    return RunFolder(run_dir).read_results()


def pending_methods(run_dir: Path, cfg: RunConfig, seeds: list[int] | None = None) -> list[str]:
    """The methods of ``cfg`` not yet complete in ``run_dir`` (in every seed folder, over ``seeds``); a UserError if
    the folder was made otherwise."""
    if seeds:
        return pending(run_dir, cfg, seeds)
    return RunFolder(run_dir).pending(cfg)


def _threads(base: RunConfig, jobs: int, opts: JobOptions) -> int:
    """Torch threads of each run: as asked; else a SLURM job's CPUs (all of its cores if not given); else the cores
    shared by the runs at a time on this machine (0, all of them, for one)."""
    if base.threads:
        return base.threads
    if opts.executor == "slurm":
        return opts.cpus_per_job or 0
    return max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else 0


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def plan(study: Study, jobs: int = 1, opts: JobOptions | None = None) -> list[tuple[RunSpec, RunConfig]]:
    """The runs of ``study`` still to do, each with the methods it lacks and its thread count; a UserError
    if a run folder was made with other settings."""
    todo: list[tuple[RunSpec, RunConfig]] = []
    for spec in study.runs:
        methods = pending_methods(study.run_dir(spec), spec.cfg, study.seeds)
        if methods:
            todo.append((spec, dataclasses.replace(spec.cfg, methods=methods, threads=_threads(study.base, jobs, opts or JobOptions()))))
    return todo


def run_all(study: Study, jobs: int = 1, say=print, todo: list[tuple[RunSpec, RunConfig]] | None = None, opts: JobOptions | None = None) -> list[str]:
    """Run every run of ``study`` that is not complete, ``jobs`` at a time, through the executor of ``opts``
    (default: this process, or local worker processes); returns the names that failed."""
    opts = opts or JobOptions()
    todo = plan(study, jobs, opts) if todo is None else todo
    done = len(study.runs) - len(todo)
    how = f" through submitit's {opts.executor} executor" if opts.executor else ""
    say(
        f"study {study.kind}: {len(study.runs)} runs in {study.folder / 'runs'}; {done} already done, {len(todo)} to run"
        + (f", {jobs} at a time" if todo and jobs > 1 else "")
        + (how if todo else "")
    )
    for spec, cfg in todo:
        run_dir = study.run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            run_dir / RUN_SPEC,
            {
                "label": spec.label,
                "how": spec.how,
                "config": as_json(cfg.to_dict()),
                "bench_args": study.bench_args,
                "device": study.device,
                **({"seeds": study.seeds} if study.seeds else {}),
                **({"tensorboard": study.tensorboard} if study.tensorboard is not None else {}),
            },
        )
    if not todo:
        return []
    by_dir = {study.run_dir(spec): spec for spec, _ in todo}
    failed: list[str] = []
    counter = iter(range(1, len(todo) + 1))

    def finished(run_dir: Path, ok: bool, seconds: float, where: str) -> None:
        spec, k = by_dir[run_dir], next(counter)
        if ok:
            say(f"  [{k}/{len(todo)}] {spec.label}: done in {seconds:.0f} s")
        else:
            failed.append(spec.name)
            log = run_dir / LOG
            say(f"  [{k}/{len(todo)}] {spec.label}: FAILED after {seconds:.0f} s ({log}: {_tail(log)}" + (f"; {where}" if where else "") + ")")

    eng = engine(opts, jobs, study.folder, f"assocgan-{study.kind}")
    gpus = gpus_to_share(study.device, opts.executor) if opts.executor == "local" or (opts.executor is None and jobs > 1) else []  # SLURM gives its own
    run_jobs([(study.run_dir(spec), cfg.threads) for spec, cfg in todo], jobs, eng, gpus, finished)
    return failed


# ---- collecting ------------------------------------------------------------------------
def _entry(study_folder: Path, spec: dict) -> tuple[dict | None, dict | None]:
    """(results, the entry of the run's method) of a run of the study, or Nones."""
    results = read_results(study_folder / "runs" / spec["name"])
    if results is None:
        return None, None
    return results, results.get(METHODS, {}).get(spec["method"])


def _status(results: dict | None, entry: dict | None) -> str:
    if entry is None:
        return "pending"
    if entry.get(COMPLETE):
        return "done"
    return f"partial ({len(entry.get(MATRIX) or [])}/{len(results[TASKS])} tasks)"


def collect(study: dict, folder: Path) -> dict[str, Any]:
    """The numbers of a study, from its run folders alone (the ``summary`` of study.json)."""
    kind = study["study"]
    runs = study["runs"]
    params = study.get("params") or {}
    base = study.get("base_config") or {}
    tasks = params.get("tasks") or []
    metric = None
    summary: dict[str, Any] = {"runs": []}
    found: dict[str, tuple[dict | None, dict | None]] = {}
    for spec in runs:
        results, entry = _entry(folder, spec)
        found[spec["name"]] = (results, entry)
        if results is not None:
            metric = metric or results[METRIC]
        summary["runs"].append(
            {
                "name": spec["name"],
                "status": _status(results, entry),
                FINAL_AVG: entry.get(FINAL_AVG) if entry else None,
                TRAIN_SECONDS: entry.get(TRAIN_SECONDS) if entry else None,
            }
        )
    if metric is None:
        metric = params.get("metric") or DEFAULT_METRIC
    summary.update(
        {
            "kind": kind,
            "benchmark": params.get("benchmark_name") or base.get("benchmark", ""),
            "metric": metric,
            "tasks": tasks,
            "n_tasks": len(tasks),
            "seeds": params.get("seeds"),
        }
    )
    summary.update(STUDIES[kind].collect(study, found, tasks))
    return summary


# ---- the commands ------------------------------------------------------------------------
def make_study(
    kind: str,
    base: RunConfig,
    out: str | Path,
    *,
    bench_args: dict[str, Any] | None = None,
    device: str | None = None,
    command: str | None = None,
    seeds: list[int] | None = None,
    tensorboard: bool | None = None,
    **options: Any,
) -> Study:
    """The runs a study needs (nothing is run); ``options``: those of the kind's ``runs``."""
    if kind not in STUDIES or not STUDIES[kind].trains:
        raise UserError(f"unknown study {kind!r}; choose one of {', '.join(k for k, s in STUDIES.items() if s.trains)}")
    bench_args = {k: (str(Path(v).resolve()) if k in ("data", "clean_images") and v else v) for k, v in (bench_args or {}).items() if v is not None}
    names = task_names(base, bench_args)
    runs, params = STUDIES[kind].runs(base, names, **options)
    if base.order:  # the tasks as the runs see them (a kind that orders the tasks itself refuses a base order)
        from types import SimpleNamespace

        from ..data.benchmarks import apply_order

        names = [t.name for t in apply_order([SimpleNamespace(name=n) for n in names], base.order)]
    params["tasks"] = names
    params["benchmark_name"] = (
        Path(bench_args["data"]).name
        if bench_args.get("data")
        else (Path(bench_args["clean_images"]).name if bench_args.get("clean_images") else base.benchmark)
    )
    params["metric"] = bench_args.get("metric") or _builtin_metric(base, bench_args)
    from ..data.benchmarks import builtin_photos_note

    note = builtin_photos_note(base.benchmark, base.size, base.n_train, base.n_test, **bench_args)
    if seeds:
        params["seeds"] = list(seeds)
    return Study(kind, Path(out), base, runs, params, bench_args, device, command, note, tensorboard, list(seeds) if seeds else None)


def read_study(folder: Path) -> dict[str, Any] | None:
    """``folder/study.json``, or None; a UserError naming the file if it is not one a study of this version
    wrote (not JSON, nested too deeply, or without the kind and runs its report is made from)."""
    path = Path(folder) / STUDY_FILE
    study = read_json_file(path, "a study's record", "move it away, or run the study again into another --out")
    if study is None:
        return None
    problem = None
    if not isinstance(study, dict):
        problem = f"a JSON {type(study).__name__}, not an object"
    elif study.get("study") not in STUDIES:
        problem = f"'study' is {study.get('study')!r}, not one of {', '.join(STUDIES)}"
    elif not isinstance(study.get("runs"), list) or not all(
        isinstance(r, dict)
        and isinstance(r.get("name"), str)
        and safe_name(r["name"]) == r["name"]
        and r["name"] not in ("", ".", "..")
        and isinstance(r.get("label", ""), str)
        for r in study["runs"]
    ):
        problem = "'runs' is not a list of runs with their folder names"
    elif not all(isinstance(study.get(k, {}), dict) for k in ("params", "base_config", "bench_args")):
        problem = "'params', 'base_config' or 'bench_args' is not an object"
    if problem:
        raise UserError(f"{path}: not a study's record ({problem}); move it away, or run the study again into another --out")
    return study


def collect_checked(study: dict, folder: Path) -> dict[str, Any]:
    """``collect``, with a record whose runs lack what their kind of study reads refused in one line."""
    try:
        return collect(study, folder)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{Path(folder) / STUDY_FILE}: damaged ({type(e).__name__}: {e}); move it away, or run the study again into another --out") from None


def study_record(study: Study) -> dict[str, Any]:
    return {
        "study": study.kind,
        "command": study.command,
        "params": as_json(study.params),
        "bench_args": study.bench_args,
        "base_config": as_json(study.base.to_dict()),
        "runs": [{"name": r.name, "label": r.label, "how": r.how, "methods": r.cfg.methods, **as_json(r.meta)} for r in study.runs],
    }


def run_study(study: Study, jobs: int | None = 1, console=None, opts: JobOptions | None = None) -> dict[str, Any]:
    """Run what the study still needs (``jobs`` at a time, through the executor of ``opts``; ``jobs`` None: one,
    or with SLURM every run at once), then write study.json (with the collected numbers), its plots and
    report.html, and print its table. Raises UserError at the end if a run failed."""
    from ..report.tables import to_rich, to_text

    say = (lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True)) if console is not None else print
    folder = study.folder
    opts = opts or JobOptions()
    if jobs is None:
        jobs = max(1, len(study.runs)) if opts.executor == "slurm" else 1
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    if RunFolder(folder).results_path.exists():
        raise UserError(f"{folder}: is a run folder; choose another --out for the study")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: is a file, not a folder")
    old = read_study(folder)
    if old is not None and old.get("study") != study.kind:
        raise UserError(f"{folder}: holds a {old.get('study')} study; choose another --out for the {study.kind} study")
    todo = plan(study, jobs, opts)  # checks the run folders before anything is written
    with folder_lock(folder, "study"):
        record = study_record(study)
        record["summary"] = collect(record, folder)
        write_json(folder / STUDY_FILE, record)
        if study.note and todo:
            say(f"warning: {study.note}")
        failed = run_all(study, jobs, say, todo, opts)
        record["summary"] = collect(record, folder)
        write_json(folder / STUDY_FILE, record)
    path = write_study_report(folder, record)
    for t in study_tables(record):
        if console is not None:
            console.print(to_rich(t, console.width))
        else:
            print(to_text(t) + "\n")
    say(f"Report: {path}")
    if failed:
        raise UserError(
            f"{len(failed)} of {len(study.runs)} runs failed ({', '.join(failed)}); see runs/<name>/{LOG} in {folder}; run the study again to retry them"
        )
    return record


# ---- the report ------------------------------------------------------------------------
def study_tables(study: dict) -> list[Table]:
    """The tables of a study (its record, study.json), in the paper's layouts (also printed by ``assocgan study``)."""
    summary = study.get("summary") or {}
    return STUDIES[study["study"]].tables(summary) if summary else []


def write_study_plots(folder: Path, study: dict) -> list[Path]:
    """(Re)write the figures of a study (its record, study.json) into ``folder/plots/``; returns the PNGs written
    (each has its PDF and SVG beside it); none before its numbers are collected."""
    summary = study.get("summary") or {}
    if not summary:
        return []
    return [save_figure(plot.draw(summary), folder / "plots" / f"{plot.stem}.png") for plot in STUDIES[study["study"]].plots]


def write_study_report(folder: Path, study: dict) -> Path:
    """(Re)write a study folder's plots and ``report.html`` from its record ``study`` (as study.json holds it): the page
    of ``report.html.study_page`` with what the study's kind gives it (its description, tables and figures)."""
    kind = STUDIES[study["study"]]
    write_study_plots(folder, study)
    captions = {plot.stem: plot.caption for plot in kind.plots}
    wide = {plot.stem for plot in kind.plots if plot.wide}
    return write_text(folder / REPORT, study_page(folder, study, kind.description, study_tables(study), captions, wide))


def rebuild_report(folder: str | Path) -> Path:
    """``assocgan report DIR``: a study folder's numbers are collected again from its runs; then plots and
    report.html are rewritten, for a study or a run folder."""
    folder = Path(folder)
    study = read_study(folder)
    if study is not None:
        study["summary"] = collect_checked(study, folder)
        write_json(folder / STUDY_FILE, study)
        return write_study_report(folder, study)
    recombine_seeds(folder)
    return write_report(folder)


def recombine_seeds(folder: Path) -> None:
    """A run folder of several seeds: its combined results.json made again from the seed folders as they are
    now, so that a seed whose results are gone is no longer counted (said on stderr), and one rerun is."""
    combined = RunFolder(folder).read_results()
    if combined is None or not isinstance(combined.get("seeds"), list):
        return
    seeds = [s for s in combined["seeds"] if isinstance(s, int)]
    found = read_seeds(folder, seeds)
    gone = [s for s in seeds if s not in found]
    if not found:
        raise UserError(f"{folder}: none of its seed folders ({', '.join(str(seed_dir(folder, s)) for s in seeds)}) holds results any more")
    for s in gone:
        print(f"assocgan: warning: {seed_dir(folder, s) / 'results.json'} is gone; seed {s} is left out of the combined results", file=sys.stderr)
    write_combined(folder, [s for s in seeds if s in found])


def report_tables(folder: str | Path) -> list:
    """The tables of a run folder (its matrices and summary, and its user study's votes) or of a study folder (its
    table in the paper's layout)."""
    from ..report.html import vote_tables
    from ..report.tables import run_tables

    folder = Path(folder)
    study = read_study(folder)
    if study is not None:
        return study_tables(study)
    return run_tables(RunFolder(folder).read_results()) + vote_tables(folder)
