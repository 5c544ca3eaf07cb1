"""Studies: the paper's further analyses (§4.5), each one command made of independent runs.

A study folder holds ``study.json`` (what the study is, its runs, and the numbers collected from them),
``runs/<name>/`` (each a normal run folder: results.json, CSVs, checkpoints, samples, its own
report.html, and ``run.json`` saying how it was configured, ``log.txt`` its output), ``plots/`` and
``report.html``.

- ``quota``: the average metric over the tasks seen so far after each task, per method (Figure 11a).
- ``order``: the same methods over several task orders; each task's final metric by arrival position
  (Figure 11b). Default orders: the cyclic rotations, so that every task arrives once at every position.
- ``lambda``: a sweep of one numeric option of one method (default: Assoc-GAN's ``lambda_distill``);
  the prior tasks' and all tasks' final metric (Figure 14).
- ``ablation``: the paper's Table 3 rows, from TL without content loss to the full Assoc-GAN.
- ``perceptual``: the user study (Table 4) on a finished run folder: a local voting page (``assocgan.perceptual``);
  it trains nothing, and ``assocgan report RUN_DIR`` shows its votes.

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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig, validate
from .errors import UserError, is_whole_number
from .io import read_json, read_json_file, write_json
from .jobs import RUN_SPEC, JobOptions, engine, gpus_to_share, run_jobs
from .metrics import DEFAULT_METRIC, METRICS
from .results import AVG, BWT, COMPLETE, FINAL_AVG, FORGETTING, MATRIX, MEMORY_BYTES, METHODS, METRIC, SD, TASKS, TRAIN_SECONDS
from .runfolder import LOG, RunFolder, as_json, folder_lock
from .seeds import mean, pending, read_seeds, seed_dir, write_combined


@dataclass(frozen=True)
class StudyKind:
    """A kind of study: what it shows, and whether it trains runs of its own (into ``--out``) or works on a
    finished run folder."""

    help: str
    trains: bool = True


STUDIES: dict[str, StudyKind] = {
    "quota": StudyKind("average metric after each task as tasks arrive, per method (paper Fig. 11a)"),
    "order": StudyKind("the same methods over several task orders: final metric by arrival position (Fig. 11b)"),
    "lambda": StudyKind("sweep of a method option, by default Assoc-GAN's --lambda-distill (Fig. 14)"),
    "ablation": StudyKind("the paper's Table 3: backbone, +MSE, +adversarial, +distillation, +heuristics, full Assoc-GAN"),
    "perceptual": StudyKind("the user study (Table 4): a local page on which participants pick the most realistic output of each "
                            "group of a finished run; its votes go to RUN_DIR/perceptual/", trains=False),
}
STUDY_FILE = "study.json"
DEFAULT_METHODS = ("tl", "jl", "replay", "assoc")  # those registered are the default of quota and order
DEFAULT_SWEEP = ("assoc", "lambda_distill")


@dataclass
class RunSpec:
    """One run of a study: a run folder ``runs/<name>`` trained with ``cfg``."""

    name: str
    label: str
    cfg: RunConfig
    how: str = ""  # what this run changes, as flags
    meta: dict[str, Any] = field(default_factory=dict)


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
def default_methods() -> list[str]:
    from .methods import METHODS

    return [m for m in DEFAULT_METHODS if m in METHODS]


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", s.replace("+", "")).strip("-")  # 3e+06 -> 3e06, not 3e-06


def variant(base: RunConfig, methods: list[str], options: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> RunConfig:
    """``base`` with other methods, method options (on top of the base's) and run settings."""
    from .methods import get_method

    opts = {}
    for m in methods:
        given = {**base.method_options.get(m, {}), **(options or {}).get(m, {})}
        opts[m] = get_method(m).resolve_options(given)
    cfg = dataclasses.replace(base, methods=list(methods), method_options=opts, **overrides)
    validate(cfg)
    return cfg


def task_names(base: RunConfig, bench_args: dict[str, Any]) -> list[str]:
    """The benchmark's task names in its own order (cheap for the built-in benchmarks)."""
    from .data.benchmarks import BUILTIN, load_benchmark

    if not any(bench_args.get(k) for k in ("data", "clean_images", "recipe")) and base.benchmark in BUILTIN:
        return [t for t, _ in BUILTIN[base.benchmark].tasks]
    args = {k: v for k, v in bench_args.items() if k in ("data", "clean_images", "recipe", "metric")}
    return load_benchmark(base.benchmark, size=16, n_train=1, n_test=1, seed=base.seed, **args).task_names


def _builtin_metric(base: RunConfig, bench_args: dict[str, Any]) -> str:
    from .data.benchmarks import BUILTIN

    if not (bench_args.get("data") or bench_args.get("clean_images")) and base.benchmark in BUILTIN:
        return BUILTIN[base.benchmark].metric
    return DEFAULT_METRIC


def parse_orders(spec: str | None, names: list[str]) -> list[str]:
    """``"1,2,3,4;4,3,2,1"`` (positions or task names) -> canonical position lists ``["1,2,3,4", "4,3,2,1"]``.
    Each order must hold every task once. Default: the cyclic rotations of the benchmark's order."""
    n = len(names)
    if not spec:
        return [",".join(str((k + i) % n + 1) for i in range(n)) for k in range(n)]
    out = []
    for item in [s.strip() for s in spec.split(";") if s.strip()]:
        pos = []
        for tok in [t.strip() for t in item.split(",") if t.strip()]:
            if is_whole_number(tok) and 1 <= int(tok) <= n:
                pos.append(int(tok))
            elif tok in names:
                pos.append(names.index(tok) + 1)
            else:
                raise UserError(f"--orders: unknown task {tok!r} in {item!r}; tasks are {', '.join(names)} (or positions 1-{n})")
        if sorted(pos) != list(range(1, n + 1)):
            raise UserError(f"--orders: {item!r} must name each of the {n} tasks exactly once")
        key = ",".join(map(str, pos))
        if key in out:
            raise UserError(f"--orders: {item!r} is given twice")
        out.append(key)
    if not out:
        raise UserError("--orders: give at least one order")
    return out


def _title(method: str) -> str:
    from .methods import get_method

    return get_method(method).title or method


def quota_runs(base: RunConfig, methods: list[str]) -> list[RunSpec]:
    return [RunSpec(m, _title(m), variant(base, [m]), how=m, meta={"method": m}) for m in methods]


def order_runs(base: RunConfig, methods: list[str], orders: list[str]) -> list[RunSpec]:
    return [
        RunSpec(f"{m}_order{o.replace(',', '-')}", f"{_title(m)}, order {o}", variant(base, [m], order=o), how=f"{m} --order {o}", meta={"method": m, "order": o})
        for m in methods for o in orders
    ]


def sweep_values(method: str, option: str, values: str | list | None) -> list[Any]:
    """The swept values, parsed by the option itself. Default: 0 and the option's default times 0.1, 0.3, 1, 3, 10."""
    from .methods import get_method

    cls = get_method(method)
    opt = next((o for o in cls.options if o.name == option), None)
    if opt is None:
        names = ", ".join(o.name for o in cls.options) or "none"
        raise UserError(f"--option {option!r}: method {method} has no such option (its options: {names})")
    if isinstance(opt.default, bool) or not isinstance(opt.default, (int, float)):
        raise UserError(f"--option {option!r}: a sweep needs a numeric option; its default is {opt.default!r}")
    if values is None:
        d = opt.default
        raw = [0, 0.1 * d, 0.3 * d, d, 3 * d, 10 * d] if d else [0, 0.1, 1, 10]
        vals = [opt.parse(str(type(d)(v))) for v in raw]
    else:
        items = values.split(",") if isinstance(values, str) else list(values)
        vals = [opt.parse(str(v).strip()) for v in items if str(v).strip()]
    out = []
    for v in vals:
        if v not in out:
            out.append(v)
    if not out:
        raise UserError("--values: give at least one value")
    return sorted(out)


def lambda_runs(base: RunConfig, method: str, option: str, values: list[Any]) -> list[RunSpec]:
    from .methods import get_method

    flag = "--" + option.replace("_", "-")
    cls = get_method(method)
    needs = cls.needs(option)  # what the option acts only with (Assoc-GAN's lambda': --distill on)
    spelled = {o.name: o for o in cls.options}
    also = "".join(f" {spelled[k].flag} {spelled[k].shown(v)}" for k, v in needs.items())
    return [
        RunSpec(_safe(f"{method}_{option}={v:g}"), f"{flag} {v:g}", variant(base, [method], {method: {**needs, option: v}}), how=f"{method}{also} {flag} {v:g}",
                meta={"method": method, "value": v})
        for v in values
    ]


# the paper's Table 3: (row label, method, loss terms, method options). Each row carries the terms its label
# names: "Backbone" is the generator trained by the adversarial loss alone (the paper's text: no content loss),
# "+Lmse" adds the content loss, "+Ladv" the adversarial term at the run's weight (``ADVERSARIAL_WEIGHT`` where the
# preset has none, as the quick preset does), "+Lfeature" the continual distillation, "+Heuristics" the
# association samples.
ABLATION_ROWS: tuple[tuple[str, str, tuple[str, ...], dict], ...] = (
    ("Backbone", "tl", ("adv",), {}),
    ("Backbone+Lmse", "tl", ("mse",), {}),
    ("Backbone+Lmse+Ladv", "tl", ("mse", "adv"), {}),
    ("Backbone+Lmse+Ladv+Lfeature", "assoc", ("mse", "adv"), {"heuristics": False, "distill": True}),
    ("Backbone+Lmse+Ladv+Heuristics", "assoc", ("mse", "adv"), {"distill": False}),
    ("Backbone+Lmse+Ladv+Heuristics+Lfeature", "assoc", ("mse", "adv"), {"distill": True}),
)
ADVERSARIAL_WEIGHT = 1e-3  # the adversarial term's weight of the rows that name it, when the run's is 0


def ablation_runs(base: RunConfig, rows=ABLATION_ROWS) -> list[RunSpec]:
    out = []
    adv = base.lambda_adv or ADVERSARIAL_WEIGHT
    content = base.lambda_content or 1.0
    for k, (label, method, terms, options) in enumerate(rows, 1):
        weights = {"lambda_content": content if "mse" in terms else 0.0, "lambda_adv": adv if "adv" in terms else 0.0}
        cfg = variant(base, [method], {method: options}, **weights)
        flags = "".join(f" {'--' + n.replace('_', '-')} {v:g}" for n, v in weights.items())
        opts = "".join(f" --{n.replace('_', '-')} {'on' if v is True else 'off' if v is False else v}" for n, v in options.items())
        out.append(RunSpec(f"{k}_{_safe(label.lower().replace('+', '_'))}", label, cfg, how=f"{method}{flags}{opts}", meta={"method": method, "row": k}))
    return out


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
    say(f"study {study.kind}: {len(study.runs)} runs in {study.folder / 'runs'}; {done} already done, {len(todo)} to run"
        + (f", {jobs} at a time" if todo and jobs > 1 else "") + (how if todo else ""))
    for spec, cfg in todo:
        run_dir = study.run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / RUN_SPEC, {"label": spec.label, "how": spec.how, "config": as_json(cfg.to_dict()), "bench_args": study.bench_args, "device": study.device,
                                        **({"seeds": study.seeds} if study.seeds else {}),
                                        **({"tensorboard": study.tensorboard} if study.tensorboard is not None else {})})
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
        summary["runs"].append({"name": spec["name"], "status": _status(results, entry),
                                FINAL_AVG: entry.get(FINAL_AVG) if entry else None, TRAIN_SECONDS: entry.get(TRAIN_SECONDS) if entry else None})
    if metric is None:
        metric = params.get("metric") or DEFAULT_METRIC
    summary.update({"kind": kind, "benchmark": params.get("benchmark_name") or base.get("benchmark", ""), "metric": metric, "tasks": tasks, "n_tasks": len(tasks),
                    "seeds": params.get("seeds")})

    def label(spec, entry):
        from .report.tables import method_label

        return method_label(spec["method"], entry) if entry else spec["label"]

    if kind == "quota":
        summary["methods"] = []
        for spec in runs:
            results, e = found[spec["name"]]
            summary["methods"].append({"name": spec["method"], "label": label(spec, e), COMPLETE: bool(e and e.get(COMPLETE)),
                                       **{k: (e or {}).get(k) for k in (AVG, FINAL_AVG, BWT, FORGETTING, MEMORY_BYTES, TRAIN_SECONDS, SD)}})
    elif kind == "order":
        by_method: dict[str, dict] = {}
        for spec in runs:
            results, e = found[spec["name"]]
            m = by_method.setdefault(spec["method"], {"name": spec["method"], "label": spec["method"], "runs": []})
            if e:
                m["label"] = label(spec, e)
            order = [int(p) for p in spec["order"].split(",")]
            complete = bool(e and e.get(COMPLETE))
            m["runs"].append({"order": spec["order"], "tasks": results[TASKS] if results else [tasks[p - 1] for p in order if p - 1 < len(tasks)],
                              "final": e[MATRIX][-1] if complete else None, FINAL_AVG: e.get(FINAL_AVG) if complete else None, COMPLETE: complete,
                              SD: e.get(SD) if complete else None})
        for m in by_method.values():
            finals = [r["final"] for r in m["runs"] if r["final"]]
            m["mean_by_position"] = [mean(f[p] for f in finals) for p in range(len(tasks))] if finals else []
        summary["methods"] = list(by_method.values())
    elif kind == "lambda":
        summary.update({"method": params.get("method"), "option": params.get("option"), "flag": "--" + str(params.get("option", "")).replace("_", "-"),
                        "prior_tasks": tasks[:-1], "rows": []})
        for spec in runs:
            results, e = found[spec["name"]]
            complete = bool(e and e.get(COMPLETE))
            final = e[MATRIX][-1] if complete else None
            summary["rows"].append({"value": spec["value"], COMPLETE: complete, "final": final,
                                    "prior_mean": mean(final[:-1]) if final and len(final) > 1 else None,
                                    "last": final[-1] if final else None, "overall": e.get(FINAL_AVG) if complete else None, BWT: e.get(BWT) if complete else None,
                                    SD: e.get(SD) if complete else None})
    elif kind == "ablation":
        summary["rows"] = []
        for spec in runs:
            results, e = found[spec["name"]]
            complete = bool(e and e.get(COMPLETE))
            summary["rows"].append({"label": spec["label"], "how": spec.get("how", ""), COMPLETE: complete,
                                    **{m: mean(e[m][-1]) if complete else None for m in METRICS},
                                    BWT: e.get(BWT) if complete else None, SD: e.get(SD) if complete else None})
    return summary


# ---- the commands ------------------------------------------------------------------------
def make_study(kind: str, base: RunConfig, out: str | Path, *, methods: list[str] | None = None, orders: str | None = None,
               method: str | None = None, option: str | None = None, values: str | list | None = None, rows=ABLATION_ROWS,
               bench_args: dict[str, Any] | None = None, device: str | None = None, command: str | None = None, seeds: list[int] | None = None,
               tensorboard: bool | None = None) -> Study:
    """The runs a study needs (nothing is run)."""
    if kind not in STUDIES or not STUDIES[kind].trains:
        raise UserError(f"unknown study {kind!r}; choose one of {', '.join(k for k, s in STUDIES.items() if s.trains)}")
    bench_args = {k: (str(Path(v).resolve()) if k in ("data", "clean_images") and v else v) for k, v in (bench_args or {}).items() if v is not None}
    names = task_names(base, bench_args)
    params: dict[str, Any] = {}
    if kind == "quota":
        methods = methods or default_methods()
        runs = quota_runs(base, methods)
        params["methods"] = methods
    elif kind == "order":
        if base.order:
            raise UserError("study order: give the task orders with --orders, not --order")
        methods = methods or default_methods()
        keys = parse_orders(orders, names)
        runs = order_runs(base, methods, keys)
        params.update(methods=methods, orders=keys)
    elif kind == "lambda":
        method, option = method or DEFAULT_SWEEP[0], option or DEFAULT_SWEEP[1]
        vals = sweep_values(method, option, values)
        runs = lambda_runs(base, method, option, vals)
        params.update(method=method, option=option, values=vals)
    else:
        runs = ablation_runs(base, rows)
        params["rows"] = [r[0] for r in rows]
    if base.order and kind != "order":
        from types import SimpleNamespace

        from .data.benchmarks import apply_order

        names = [t.name for t in apply_order([SimpleNamespace(name=n) for n in names], base.order)]
    params["tasks"] = names
    params["benchmark_name"] = Path(bench_args["data"]).name if bench_args.get("data") else (Path(bench_args["clean_images"]).name if bench_args.get("clean_images") else base.benchmark)
    params["metric"] = bench_args.get("metric") or _builtin_metric(base, bench_args)
    from .data.benchmarks import builtin_photos_note

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
            isinstance(r, dict) and isinstance(r.get("name"), str) and _safe(r["name"]) == r["name"] and r["name"] not in ("", ".", "..")
            and isinstance(r.get("label", ""), str) for r in study["runs"]):
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
    from .report.html import study_tables, write_report
    from .report.tables import to_rich, to_text

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
    path = write_report(folder)
    for t in study_tables(record):
        if console is not None:
            console.print(to_rich(t, console.width))
        else:
            print(to_text(t) + "\n")
    say(f"Report: {path}")
    if failed:
        raise UserError(f"{len(failed)} of {len(study.runs)} runs failed ({', '.join(failed)}); see runs/<name>/{LOG} in {folder}; run the study again to retry them")
    return record


def rebuild_report(folder: str | Path) -> Path:
    """``assocgan report DIR``: a study folder's numbers are collected again from its runs; then plots and
    report.html are rewritten, for a study or a run folder."""
    from .report.html import write_report

    folder = Path(folder)
    study = read_study(folder)
    if study is not None:
        study["summary"] = collect_checked(study, folder)
        write_json(folder / STUDY_FILE, study)
    else:
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
    from .report.html import study_tables, vote_tables
    from .report.tables import run_tables

    folder = Path(folder)
    study = read_study(folder)
    if study is not None:
        return study_tables(study)
    return run_tables(RunFolder(folder).read_results()) + vote_tables(folder)


