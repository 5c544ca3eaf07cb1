"""A run over several seeds (``--seeds 0,1,2``): each seed is an ordinary run folder ``OUT/seed<k>/`` (resumed
like any run), and ``OUT/results.json`` combines them: every cell and every summary figure is the mean over the
seeds, with its sample standard deviation beside it (``sd``) and the seeds' own values (``per_seed``).

The combined results.json has the run layout (``matrix``, ``avg``, ``final_avg``, ... of each method, in means), so
that the report, the tables and the plots read it as they read one run; ``seeds`` marks it, and every table shows
``mean ± sd`` where ``sd`` is there. A mean is over the seeds that have the value: a method's entry is ``complete``
when it is complete in every seed, and its matrix has the rows every seed has reached.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .errors import RunFailed, UserError, is_whole_number
from .io import write_json
from .metrics import DEFAULT_METRICS
from .results import (
    AVG,
    BENCHMARK,
    BWT,
    CITE,
    COMPLETE,
    CONFIG,
    CURVE,
    FAILED,
    FINAL_AVG,
    FORGETTING,
    FORGETTING_LAST,
    FWT,
    IDENTITY,
    IDENTITY_SD,
    INPUTS,
    INTRANSIGENCE,
    MATRIX,
    MEMORY_BREAKDOWN,
    MEMORY_BY_TASK,
    MEMORY_BYTES,
    METHODS,
    METRIC,
    OPTIONS,
    PER_SEED,
    PLASTICITY_GAP,
    PROVENANCE,
    ROUTED,
    ROUTER_ACCURACY,
    RUNS,
    SCHEMA_VERSION,
    SCORED,
    SD,
    SEEDS,
    SEEDS_COMPLETE,
    STABILITY_GAP,
    STEP,
    TASK,
    TASK_DESCRIPTIONS,
    TASK_ID_AT_TEST,
    TASKS,
    TASKS_LEFT_OUT,
    TITLE,
    TRAIN_CPU_SECONDS,
    TRAIN_SECONDS,
    TRAIN_SECONDS_BY_TASK,
    VERSION,
    scored_metrics,
)
from .runfolder import RunFolder, folder_lock

SUMMARY = (FINAL_AVG, BWT, FORGETTING, FORGETTING_LAST, FWT, STABILITY_GAP, INTRANSIGENCE, PLASTICITY_GAP, MEMORY_BYTES, TRAIN_SECONDS, TRAIN_CPU_SECONDS)
SERIES = (AVG, MEMORY_BY_TASK, TRAIN_SECONDS_BY_TASK)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` as [0, 1, 2]; a UserError for anything else (empty, repeated, not whole numbers)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(is_whole_number(p) for p in parts):
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 0,1,2")
    seeds = [int(p) for p in parts]
    from .config import MAX_SEED

    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise UserError(f"--seeds {text!r}: seed {bad[0]} is not 0 to {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed{seed}"


def mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def sd(xs) -> float | None:
    """The sample standard deviation of the values given (None for fewer than two)."""
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def _cells(rows_by_seed: list[list[list[Any]]], n_rows: int, how) -> list[list[Any]]:
    out = []
    for i in range(n_rows):
        width = max(len(rows[i]) for rows in rows_by_seed)
        out.append([how([rows[i][j] if j < len(rows[i]) else None for rows in rows_by_seed]) for j in range(width)])
    return out


def _series(lists: list[list[Any]], how) -> list[Any]:
    n = min((len(x) for x in lists), default=0)
    return [how([x[i] for x in lists]) for i in range(n)]


def _curve(curves: list[list[dict]], metrics: list[str]) -> list[dict]:
    """The seeds' evaluation curves averaged point by point, where they were taken at the same steps; else none."""
    if not curves or any(len(c) != len(curves[0]) for c in curves):
        return []
    out = []
    for points in zip(*curves):
        if any((p[STEP], p[TASK]) != (points[0][STEP], points[0][TASK]) for p in points):
            return []
        out.append(
            {
                STEP: points[0][STEP],
                TASK: points[0][TASK],
                **{m: _series([p[m] for p in points], mean) for m in metrics},
                SD: {m: _series([p[m] for p in points], sd) for m in metrics},
            }
        )
    return out


def combine_entries(entries: list[dict | None], metrics: list[str] | None = None) -> dict[str, Any]:
    """One method's entry over the seeds (None where a seed lacks it): means, ``sd`` and ``per_seed``; a matrix
    in each of ``metrics`` (the runs' scored metrics; by default PSNR and SSIM)."""
    metrics = list(metrics or DEFAULT_METRICS)
    have = [e for e in entries if e is not None]
    n_rows = min(len(e[MATRIX]) for e in have)
    first = have[0]
    out: dict[str, Any] = {k: first.get(k) for k in (TITLE, CITE, OPTIONS, TASK_ID_AT_TEST)}
    out[COMPLETE] = all(e is not None and e.get(COMPLETE) for e in entries)
    out[SEEDS_COMPLETE] = sum(1 for e in entries if e is not None and e.get(COMPLETE))
    spread: dict[str, Any] = {}
    for key in (MATRIX, *metrics):
        rows = [e[key][:n_rows] for e in have]
        out[key], spread[key] = _cells(rows, n_rows, mean), _cells(rows, n_rows, sd)
    routed = [e for e in have if e.get(ROUTED)]
    if routed:  # --router on: the routed matrices and the router's accuracy, averaged as the matrices are
        out[ROUTED], spread[ROUTED] = {}, {}
        for m in routed[0][ROUTED]:
            rows = [e[ROUTED][m][:n_rows] for e in routed if m in e[ROUTED]]
            out[ROUTED][m], spread[ROUTED][m] = _cells(rows, n_rows, mean), _cells(rows, n_rows, sd)
        acc = [e[ROUTER_ACCURACY][:n_rows] for e in routed if e.get(ROUTER_ACCURACY)]
        if acc:
            out[ROUTER_ACCURACY], spread[ROUTER_ACCURACY] = _cells(acc, min(len(a) for a in acc), mean), _cells(acc, min(len(a) for a in acc), sd)
    for key in SERIES:
        lists = [e.get(key) or [] for e in have]
        out[key], spread[key] = _series(lists, mean), _series(lists, sd)
    for key in SUMMARY:
        vals = [e.get(key) if e is not None and e.get(COMPLETE) else None for e in entries]
        if not out[COMPLETE]:  # a partial method: its figures so far
            vals = [e.get(key) if e is not None else None for e in entries]
        out[key], spread[key] = mean(vals), sd(vals)
    if out[MEMORY_BYTES] is not None:
        out[MEMORY_BYTES] = int(round(out[MEMORY_BYTES]))
    breakdown = {k: mean([(e.get(MEMORY_BREAKDOWN) or {}).get(k) for e in have]) for k in first.get(MEMORY_BREAKDOWN) or {}}
    out[MEMORY_BREAKDOWN] = {k: int(round(v)) for k, v in breakdown.items() if v is not None}
    out[CURVE] = _curve([e.get(CURVE) or [] for e in have], metrics)
    out[SD] = spread
    out[PER_SEED] = {key: [None if e is None else e.get(key) for e in entries] for key in SUMMARY}
    failed = [e[FAILED] for e in have if e.get(FAILED)]
    if failed:
        out[FAILED] = failed[0]
    return out


def combine(per_seed: dict[int, dict]) -> dict[str, Any]:
    """The combined results of run results by seed (``{seed: results}``), in the run layout with ``seeds``."""
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    for s, res in per_seed.items():
        if res[BENCHMARK] != first[BENCHMARK] or res[TASKS] != first[TASKS] or res[METRIC] != first[METRIC]:
            raise UserError(f"seed {s}: a run of {res[BENCHMARK]} {res[TASKS]}, not of {first[BENCHMARK]} {first[TASKS]}; the seeds cannot be combined")
    out: dict[str, Any] = {VERSION: SCHEMA_VERSION, **{k: first.get(k) for k in (BENCHMARK, METRIC, TASKS, TASK_DESCRIPTIONS)}}
    out[SEEDS] = seeds
    out[RUNS] = [f"seed{s}" for s in seeds]
    out[CONFIG] = {**(first.get(CONFIG) or {}), "seed": None}
    for key in (INPUTS, TASKS_LEFT_OUT):
        if first.get(key):
            out[key] = first[key]
    metrics = scored_metrics(first)
    for s, res in per_seed.items():
        if scored_metrics(res) != metrics:
            raise UserError(f"seed {s}: scored in {', '.join(scored_metrics(res))}, not in {', '.join(metrics)}; the seeds cannot be combined")
    if SCORED in first:
        out[SCORED] = metrics
    ident = {m: [(r.get(IDENTITY) or {}).get(m) for r in per_seed.values()] for m in metrics}
    if all(v is not None and len(v) == len(first[TASKS]) for vs in ident.values() for v in vs):
        out[IDENTITY] = {m: _series(vs, mean) for m, vs in ident.items()}
        out[IDENTITY_SD] = {m: _series(vs, sd) for m, vs in ident.items()}
    names: list[str] = []
    for r in per_seed.values():
        names += [n for n in r.get(METHODS, {}) if n not in names]
    out[METHODS] = {n: combine_entries([r[METHODS].get(n) for r in per_seed.values()], metrics) for n in names}
    out[PROVENANCE] = [dict(p, seed=s) for s, r in per_seed.items() for p in r.get(PROVENANCE) or []]
    return out


def read_seeds(out: str | Path, seeds: list[int]) -> dict[int, dict]:
    """The results of each seed folder that has them."""
    found = {}
    for s in seeds:
        res = RunFolder(seed_dir(out, s)).read_results()
        if res is not None:
            found[s] = res
    return found


def write_combined(out: str | Path, seeds: list[int]) -> dict[str, Any] | None:
    """``OUT/results.json`` from the seed folders (those that have results); None if none has."""
    per_seed = read_seeds(out, seeds)
    if not per_seed:
        return None
    combined = combine(per_seed)
    write_json(Path(out) / "results.json", combined)
    return combined


def check_folder(out: str | Path, seeds: list[int]) -> None:
    """A UserError if ``out`` holds a single run (a results.json without ``seeds``) or a combination of other seeds."""
    res = RunFolder(out).read_results()
    if res is None:
        return
    if SEEDS not in res:
        raise UserError(f"{Path(out)}: holds a run of one seed; choose another --out for a run with --seeds")


def pending(out: str | Path, cfg, seeds: list[int]) -> list[str]:
    """The methods of ``cfg`` not complete in every seed folder."""
    import dataclasses

    left: list[str] = []
    for s in seeds:
        for m in RunFolder(seed_dir(out, s)).pending(dataclasses.replace(cfg, seed=s)):
            if m not in left:
                left.append(m)
    return [m for m in cfg.methods if m in left]


def run_seeds(cfg, out: str | Path, seeds: list[int], console=None, **run_args) -> dict[str, Any]:
    """Run ``cfg`` once per seed into ``OUT/seed<k>/`` (each resumed as any run folder), then write the combined
    ``OUT/results.json`` and ``OUT/report.html``, and print the combined tables. A seed whose run fails does not stop
    the others; ``RunFailed`` is raised at the end. Returns the combined results."""
    import dataclasses

    from .runner import run, write_report_safely

    check_folder(out, seeds)
    failed = []
    for s in seeds:
        if console is not None:
            console.rule(f"seed {s}: {seed_dir(out, s)}")
        try:
            run(dataclasses.replace(cfg, seed=s), seed_dir(out, s), console=console, **run_args)
        except RunFailed as e:
            failed.append(f"seed {s}: {e}")
    with folder_lock(Path(out)):
        combined = write_combined(out, seeds)
    if combined is None:  # pragma: no cover - a run writes its results before it trains
        raise UserError(f"{out}: no seed has results")
    if console is not None:
        from .report.console import print_tables

        console.rule(f"seeds {', '.join(map(str, seeds))}: mean ± sd")
        print_tables(combined, console)
    path = write_report_safely(Path(out))
    if path is not None and console is not None:
        console.print(f"\nReport: {path}")
    if failed:
        raise RunFailed("; ".join(failed))
    return combined
