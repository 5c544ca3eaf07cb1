"""Continual-learning methods, one file each, on the shared training loop.

Every module of this package that defines a ``Method`` subclass with a ``name`` is registered on import;
``METHODS`` lists them in the order of ``ORDER`` (then by name). A method that is not finished must not
set ``name``.
"""

from __future__ import annotations

import importlib

from ..errors import UserError
from ..registry import discover
from .base import Batch, Context, Method, Option, Step

ORDER = (
    "tl",
    "jl",
    "single",
    "piggyback-ti",
    "replay",
    "assoc",
    "clgan",
    "thanh",
    "liang",
    "lifelonggan",
    "liss",
    "mergan",
    "lvaegan",
    "piggyback",
    "si",
    "mas",
    "lwf",
    "derpp",
    "lora",
    "cmc",
)


def _discover() -> dict[str, type[Method]]:
    found = discover(__name__, __path__, Method, ORDER, skip=("base", "helpers"), what="method")
    owners: dict[str, tuple[str, Option]] = {}
    for m in found.values():  # an option is one CLI flag: two methods may not declare the same name (a variant inherits it)
        for o in m.options:
            if owners.setdefault(o.name, (m.name, o))[1] is not o:
                raise RuntimeError(f"option {o.flag} is declared by both {owners[o.name][0]} and {m.name}")
    return found


METHODS: dict[str, type[Method]] = _discover()


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"--methods: unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(spec: str | list[str]) -> list[str]:
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise UserError("--methods: give at least one method")
    for n in names:
        get_method(n)
    if len(set(names)) != len(names):
        raise UserError(f"--methods: a method is named twice in {','.join(names)}")
    return names


MEASURES = """\
R[i][j] is the score (the benchmark's metric) on task j's test split after training task i, i, j = 1..T.

- **AVG** after task i: the mean of R[i][j] over j <= i; the final AVG is that after the last task.
- **BWT** (backward transfer, Lopez-Paz & Ranzato 2017): the mean over j < T of R[T][j] - R[j][j]; negative
  when earlier tasks were forgotten.
- **Forgetting** in its two conventions: the mean over j < T of the best R[i][j] (j <= i < T) minus R[T][j]
  (Chaudhry et al. 2018, `forgetting`), and of R[j][j] - R[T][j], the score right after the task's training minus
  the final one (Avalanche's, `forgetting_last`; it is -BWT).
- **Stability gap** (De Lange et al. 2023): the mean over old tasks j of R[j][j] minus the worst score of task j at
  any evaluation during the later tasks' training (the `--eval-every` points and the later rows of R), 0 where it
  never fell; left out without `--eval-every`, since the end of each task cannot see a dip that recovers.
- **Intransigence** (Chaudhry et al. 2018): the mean over k of R_JL[k][k] - R[k][k], how much less the method
  learns each new task than joint learning of every task so far (JL in the same run). **Plasticity gap**: the
  same against the single-task specialists (`single` in the same run), how much less than a generator that learns
  that task alone. Positive: learns less.
- Every measure is taken in the metric's own direction: for a lower-is-better metric each difference is turned
  round, so that negative BWT and positive forgetting, stability gap, intransigence and plasticity gap always mean
  worse.
- **FWT** (forward transfer, Lopez-Paz & Ranzato 2017): the mean over j >= 2 of R[j-1][j] - b_j, where
  R[j-1][j] is task j as the generator answers it after training task j-1, before its own training, and b_j
  is the score of the initial, untrained generator on task j (evaluated, not assumed; the residual U-Net
  starts as the identity, so b_j is close to the score of doing nothing). Positive when the earlier tasks
  prepared the generator for task j. Each run evaluates the next task once after each task for it (the
  accuracy matrix keeps only R[i][j] for j <= i). Not defined for a method evaluated with the task identity
  (`single`, `piggyback-ti`), whose answer for a task does not exist before that task is trained.
- **Routed** (`--router on`, for a method evaluated with the task identity: `single`, `piggyback-ti`, `lora`, `cmc`): the
  same matrix with each test image answered by the generator of the task a router chose for it, without the
  task identity (results.json's `routed`, the report's "(router)" row), and the router's accuracy on each task's
  test images (`router_accuracy`). The router is a small classifier trained after each task, without old data:
  on the current task's inputs and on samples of each past task's inputs made by a mapper of that task (the
  mapping memory of `assoc`) from the current images that lie in that task's target domain, as `assoc` plans them
  (`assocgan.router`). The generator trains bit for bit as
  without it; its mappers and weights count in the method's memory."""


def methods_markdown() -> str:
    """docs/methods.md, made from each method's module docstring and declared options."""
    import inspect

    from .. import fisher
    from ..nets import unet

    out = [
        "# Methods",
        "",
        "Made by `assocgan methods --markdown` from each method's own file: its docstring and the options it declares.",
        "",
        "## How methods are compared",
        "",
        MEASURES,
        "",
        "## The generator every method trains",
        "",
        inspect.getdoc(unet) or "",
        "",
        "## The quadratic penalties' curvature",
        "",
        inspect.getdoc(fisher) or "",
        "",
    ]
    for m in METHODS.values():
        doc = inspect.getdoc(importlib.import_module(m.__module__)) or ""
        parent = m.__bases__[0]
        if getattr(parent, "name", "") and parent.__module__ == m.__module__:  # a variant, described with its parent
            doc = f"A variant of `{parent.name}`, described in its section."
        out += [f"## `{m.name}`: {m.title}", "", f"*{m.cite}*" + (" Evaluated with the true task identity." if m.needs_task_id else ""), "", doc, ""]
        if m.options:
            out += ["| option | default | meaning |", "|---|---|---|"]
            out += [f"| `{o.flag}` | `{o.shown(o.default)}` | {o.help} |" for o in m.options]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


__all__ = ["METHODS", "Batch", "Method", "Option", "Context", "Step", "get_method", "parse_methods", "methods_markdown"]
