"""The layout of results.json: the one place that names its keys.

A run's results.json is a ``Results`` (what was run: benchmark, metric, tasks, settings, provenance) holding a
``MethodEntry`` per method (its accuracy matrix in the benchmark's metric, the matrices in every metric the run
scored, ``metrics``, the figures derived from them, memory and time). The key constants below are the names on
disk; the dataclasses' fields carry the same names. Code that reads or writes results.json as a dict (the
runner, the seeds' combination, the studies, the run folder, the report) spells a key only through these.

``SCHEMA_VERSION`` is written into every results.json (``schema_version``); a file without it was written before
the layout was versioned and reads as version 0, whose layout is version 1's without the version key. A file of
a later version than this code knows is refused (``version_problem``).

A combined results.json over seeds (``seeds.combine``) has the same layout, in means, with ``seeds``, ``runs``,
``identity_sd`` and, in each entry, ``seeds_complete``, ``sd`` and ``per_seed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from .metrics import DEFAULT_METRICS, METRICS

SCHEMA_VERSION = 1

# ---- results.json, top level --------------------------------------------------------------
VERSION = "schema_version"
BENCHMARK = "benchmark"
METRIC = "metric"
TASKS = "tasks"
TASK_DESCRIPTIONS = "task_descriptions"
IDENTITY = "identity"  # {metric: the score of doing nothing on each task}
IDENTITY_SD = "identity_sd"
CONFIG = "config"
METHODS = "methods"  # {method name: its entry}
INPUTS = "inputs"
PROVENANCE = "provenance"
TASKS_LEFT_OUT = "tasks_left_out"
SEEDS = "seeds"
RUNS = "runs"
SCORED = "metrics"  # the metrics the run scored, in order (a file without it: psnr and ssim, see ``scored_metrics``)

# ---- a method's entry -----------------------------------------------------------------------
TITLE = "title"
CITE = "cite"
OPTIONS = "options"
TASK_ID_AT_TEST = "task_id_at_test"
COMPLETE = "complete"
MATRIX = "matrix"  # R[i][j] in the benchmark's metric: task j after training task i (None for tasks not trained yet)
AVG = "avg"
FINAL_AVG = "final_avg"
BWT = "bwt"
FORGETTING = "forgetting"  # Chaudhry et al. 2018: best earlier score minus final
FORGETTING_LAST = "forgetting_last"  # Avalanche's: the score right after the task's training minus final
FWT = "fwt"
STABILITY_GAP = "stability_gap"  # De Lange et al. 2023: the deepest dip of an old task during later training
INTRANSIGENCE = "intransigence"  # Chaudhry et al. 2018: JL's score on each new task minus the method's
PLASTICITY_GAP = "plasticity_gap"  # the single-task specialist's score on each new task minus the method's
INITIAL = "initial"  # {metric: the untrained generator on each task} (FWT's b_j)
AHEAD = "ahead"  # {metric: [task j after training task j-1, before its own training]} (FWT's R[j-1][j])
MEMORY_BYTES = "memory_bytes"
MEMORY_BREAKDOWN = "memory_breakdown"
MEMORY_BY_TASK = "memory_by_task"
TRAIN_SECONDS = "train_seconds"
TRAIN_SECONDS_BY_TASK = "train_seconds_by_task"
TRAIN_CPU_SECONDS = "train_cpu_seconds"
LOSSES_BY_TASK = "losses_by_task"
CURVE = "curve"  # the --eval-every points: {STEP, TASK, each metric: [a score per task seen]}
FAILED = "failed"
ROUTED = "routed"  # with --router on: {metric: R[i][j] with each test image answered through the task router} (no task identity)
ROUTER_ACCURACY = "router_accuracy"  # with --router on: [after task i: the router's accuracy on each task j <= i's test images]
SEEDS_COMPLETE = "seeds_complete"
SD = "sd"  # over seeds: the sample standard deviation of each figure, by its key
PER_SEED = "per_seed"
STEP = "step"
TASK = "task"

SUMMARY_FIGURES = (AVG, FINAL_AVG, BWT, FORGETTING, FORGETTING_LAST, FWT, STABILITY_GAP)  # what ``evaluate.summarize`` derives
REFERENCE_FIGURES = (INTRANSIGENCE, PLASTICITY_GAP)  # what ``evaluate.reference_gaps`` derives against JL and the specialists


def scored_metrics(results: dict[str, Any]) -> list[str]:
    """The metrics a results.json (or a study's summary of one) holds a matrix in, in order: those it records
    (``metrics``), or, in a file written before runs chose their metrics, PSNR and SSIM; with its headline
    ``metric`` in any case."""
    names = list(results.get(SCORED) or DEFAULT_METRICS)
    headline = results.get(METRIC)
    return names if not headline or headline in names else [headline, *names]


@dataclass
class MethodEntry:
    """One method's entry of results.json. ``scores`` holds the full matrix in every metric (on disk one key per
    metric name, rows padded with None to the number of tasks). The fields from ``seeds_complete`` on are only
    in some entries (combined over seeds, or failed) and are left out of the JSON where None; ``extra`` keeps
    keys this version does not know, written back as they were."""

    title: str | None = None
    cite: str | None = None
    options: dict | None = None
    task_id_at_test: bool | None = None
    complete: bool = False
    matrix: list = field(default_factory=list)
    avg: list = field(default_factory=list)
    final_avg: float | None = None
    bwt: float | None = None
    forgetting: float | None = None
    forgetting_last: float | None = None
    fwt: float | None = None
    stability_gap: float | None = None
    intransigence: float | None = None
    plasticity_gap: float | None = None
    initial: dict | None = None
    ahead: dict | None = None
    memory_bytes: int | None = None
    memory_breakdown: dict | None = None
    memory_by_task: list | None = None
    train_seconds: float | None = None
    train_seconds_by_task: list | None = None
    train_cpu_seconds: float | None = None
    scores: dict[str, list] = field(default_factory=dict)
    losses_by_task: list | None = None
    curve: list | None = None
    routed: dict | None = None
    router_accuracy: list | None = None
    seeds_complete: int | None = None
    sd: dict | None = None
    per_seed: dict | None = None
    failed: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # left out of the JSON where None (the measures too: a file written before them has none, and round-trips)
    OPTIONAL = (
        INITIAL,
        AHEAD,
        LOSSES_BY_TASK,
        SEEDS_COMPLETE,
        SD,
        PER_SEED,
        FAILED,
        FORGETTING_LAST,
        STABILITY_GAP,
        INTRANSIGENCE,
        PLASTICITY_GAP,
        ROUTED,
        ROUTER_ACCURACY,
    )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            if f.name == "scores":
                out.update(self.scores)
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any], metrics: Iterable[str] | None = None) -> MethodEntry:
        """An entry as read; ``metrics``: the names of its matrices (the run's ``scored_metrics``; by default
        the registered metrics it holds)."""
        known = {f.name for f in fields(cls)} - {"scores", "extra"}
        names = [m for m in (METRICS if metrics is None else metrics) if m in d and m not in known]
        return cls(
            **{k: d.get(k) for k in known if k in d},
            scores={m: d[m] for m in names},
            extra={k: v for k, v in d.items() if k not in known and k not in names},
        )


@dataclass
class Results:
    """A results.json: the run and its methods' entries; ``extra`` keeps keys this version does not know."""

    benchmark: str
    metric: str
    tasks: list[str]
    task_descriptions: list[str] | None = None
    identity: dict[str, list] | None = None
    config: dict | None = None
    methods: dict[str, MethodEntry] = field(default_factory=dict)
    inputs: dict | None = None
    provenance: list | None = None
    tasks_left_out: list | None = None
    seeds: list[int] | None = None
    runs: list[str] | None = None
    identity_sd: dict | None = None
    metrics: list[str] | None = None  # SCORED
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {VERSION: self.schema_version}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", VERSION) or value is None:
                continue
            out[f.name] = {n: e.to_json() for n, e in value.items()} if f.name == METHODS else value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Results:
        """A results.json as read; one without ``schema_version`` (written before it) as version 0."""
        known = {f.name for f in fields(cls)} - {"extra"}
        args = {k: d[k] for k in known if k in d}
        args[VERSION] = d.get(VERSION, 0)
        names = scored_metrics(d)
        args[METHODS] = {n: MethodEntry.from_json(e, names) for n, e in d.get(METHODS, {}).items()}
        return cls(**args, extra={k: v for k, v in d.items() if k not in known})


def version_problem(d: dict[str, Any]) -> str | None:
    """What makes a results.json's ``schema_version`` one this code cannot read, or None (none: version 0)."""
    v = d.get(VERSION, 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        return f"'{VERSION}' {v!r} is not a version number"
    if v > SCHEMA_VERSION:
        return f"written in layout version {v} by a newer assocgan; this one reads up to version {SCHEMA_VERSION}"
    return None
