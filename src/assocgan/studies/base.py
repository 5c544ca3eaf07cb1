"""The study interface: a kind of study is one file of this package whose ``StudyKind`` subclass sets ``name``.

``assocgan.studies`` finds every such class, keeps one instance of each in ``STUDIES`` and calls its hooks:

- on the command line, ``assocgan study <name>``: ``help`` (its line in ``assocgan study --help``) and ``details``
  (the rest of its own --help); ``add_arguments(group)``, its own arguments. A kind that trains (``trains``) gets the
  run options, ``--jobs`` and the executor options beside them, and ``--methods`` where ``chooses_methods``; its
  base run configuration is made with the methods of ``base_methods(args)``, and ``options(args, cfg)`` are the
  keyword arguments ``make_study`` hands on to ``runs``. A kind that trains nothing works on a finished run folder:
  ``work(args)`` is its whole command;
- ``runs(base, names, **options)``: the runs of the study (each a run folder ``runs/<name>``) and the parameters
  study.json records of it;
- ``collect(study, found, tasks)``: the kind's part of the ``summary`` of study.json, from its run folders' results;
- ``tables(summary)`` and ``plots``: its tables (in report.html, and printed at the end of the study) and its
  figures (``plots/<stem>.png``, in report.html under their captions); ``description``: the lead of its report.

Everything a kind needs in common (the runs' configurations, their titles and folder names) is here.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import RunConfig, validate
from ..report.tables import below_input, identity
from ..results import METRIC

if TYPE_CHECKING:  # pragma: no cover
    from ..report.tables import Table

DEFAULT_METHODS = ("tl", "jl", "replay", "assoc")  # those registered are the default of a kind that chooses its methods


@dataclass
class RunSpec:
    """One run of a study: a run folder ``runs/<name>`` trained with ``cfg``."""

    name: str
    label: str
    cfg: RunConfig
    how: str = ""  # what this run changes, as flags
    meta: dict[str, Any] = field(default_factory=dict)  # what the kind's ``collect`` reads of the run, kept in study.json


@dataclass(frozen=True)
class Plot:
    """A figure of a study: ``draw(summary)`` makes it from the summary of study.json into ``plots/<stem>.png``;
    report.html shows it under ``caption``, at the page's full width where ``wide``."""

    stem: str
    caption: str
    draw: Callable[[dict], Any]
    wide: bool = True


class StudyKind:
    """A kind of study; a subclass overrides the hooks its kind needs (see the module's docstring)."""

    name: ClassVar[str] = ""  # unset: not registered
    help: ClassVar[str] = ""
    details: ClassVar[str] = "Its runs are run folders under OUT/runs/ (done ones are skipped); OUT/report.html shows the table and plot."
    description: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    chooses_methods: ClassVar[bool] = False
    plots: ClassVar[tuple[Plot, ...]] = ()

    def add_arguments(self, group: Any) -> None:
        """Add the kind's own command-line arguments to ``group``: the "study" argument group of its parser (of a kind
        that trains nothing: the parser itself)."""

    def base_methods(self, args: argparse.Namespace) -> str:
        """The --methods the study's base run configuration is made with: every method its runs may train, so that
        the method options given on the command line reach them."""
        raise NotImplementedError(f"study {self.name}: base_methods")

    def options(self, args: argparse.Namespace, cfg: RunConfig) -> dict[str, Any]:
        """The keyword arguments of ``runs`` that the command line gives (``cfg``: the base run configuration)."""
        return {}

    def runs(self, base: RunConfig, names: list[str], **options: Any) -> tuple[list[RunSpec], dict[str, Any]]:
        """The runs of the study made on ``base`` (``names``: the benchmark's tasks in its own order), and the
        parameters study.json records of it."""
        raise NotImplementedError(f"study {self.name}: runs")

    def collect(self, study: dict, found: dict[str, tuple[dict | None, dict | None]], tasks: list[str]) -> dict[str, Any]:
        """The kind's part of the summary of ``study`` (the record of study.json); ``found``: each run's results and
        the entry of its method (None where not run yet), by run name; ``tasks``: the study's tasks."""
        return {}

    def tables(self, summary: dict) -> list[Table]:
        """The kind's tables, made from the summary of study.json."""
        return []

    def work(self, args: argparse.Namespace) -> int:
        """The command of a kind that trains nothing, from its parsed arguments; its exit code."""
        raise NotImplementedError(f"study {self.name}: work")


class MethodsStudy(StudyKind):
    """A kind whose runs are one a method of ``--methods`` (default: those of ``DEFAULT_METHODS`` registered)."""

    chooses_methods = True

    def base_methods(self, args: argparse.Namespace) -> str:
        return args.methods if args.methods is not None else ",".join(default_methods())

    def options(self, args: argparse.Namespace, cfg: RunConfig) -> dict[str, Any]:
        return {"methods": cfg.methods}


def default_methods() -> list[str]:
    from ..methods import METHODS

    return [m for m in DEFAULT_METHODS if m in METHODS]


def safe_name(s: str) -> str:
    """``s`` as a folder name: letters, digits and ``_.=-`` (3e+06 -> 3e06, not 3e-06)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", s.replace("+", "")).strip("-")


def method_title(method: str) -> str:
    from ..methods import get_method

    return get_method(method).title or method


def run_title(spec: dict, entry: dict | None) -> str:
    """The title of a run's method as its results give it (its label in study.json before it has any)."""
    from ..report.tables import method_label

    return method_label(spec["method"], entry) if entry else spec["label"]


def variant(base: RunConfig, methods: list[str], options: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> RunConfig:
    """``base`` with other methods, method options (on top of the base's) and run settings."""
    from ..methods import get_method

    opts = {}
    for m in methods:
        given = {**base.method_options.get(m, {}), **(options or {}).get(m, {})}
        opts[m] = get_method(m).resolve_options(given)
    cfg = dataclasses.replace(base, methods=list(methods), method_options=opts, **overrides)
    validate(cfg)
    return cfg


def below_doing_nothing(results: dict | None, entry: dict | None) -> str:
    """The tasks on which a study run's method ends below doing nothing in its benchmark's metric: "none", a list
    such as "T2,T4", or "" where unknown (a partial run). Every table of runs says it, as a run's own summary does."""
    if not results or not entry:
        return ""
    return below_input(entry, identity(results, results[METRIC]), results[METRIC])
