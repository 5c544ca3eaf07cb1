"""The method interface: a method is one file whose class overrides a few hooks of ``Method``.

The one training loop (``assocgan.train``) calls, for each task t in order::

    method.before_task(t, task)
    for each step:
        batch = method.batch(t, task)                # what G trains on (current data, replay, associations)
        D step:  GAN loss, backward; method.discriminator_gradients(step) sees D's gradient of it;
                 then method.discriminator_loss(step) (a penalty) joins it before D's update
        G step:  weighted content + adversarial + method.generator_loss(step)
        method.after_step(step)
    method.after_task(t, task)                       # keep what the method remembers
    evaluate method.eval_generator(j) on every task j <= t

After each task and every ``--checkpoint-every`` steps the loop saves the networks, optimisers and random
streams with ``method.state_dict()``; a killed run resumes from there through ``load_state_dict`` and goes on
bit for bit as it would have. ``generator_from_checkpoints`` says how the saved generators answer for a task
(``assocgan.load_generator``, ``assocgan translate``).

A method declares its own options beside its code (``options``); they become CLI flags
(``--assoc-ratio``) and appear in ``results.json``. What it keeps between tasks is reported by
``memory()`` in bytes as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn

from ..distributed import SINGLE, Ranks
from ..errors import UserError
from ..options import SWITCH_OFF, SWITCH_ON, SWITCH_SPELLINGS, Option, parse_switch  # noqa: F401 (re-exported: a method file imports from base)
from ..rng import side_stream

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig
    from ..data.tasks import Task


@dataclass
class Context:
    """What the training loop hands a method."""

    cfg: RunConfig
    G: nn.Module
    D: nn.Module
    gen: torch.Generator  # the run's random stream for data and method choices
    n_tasks: int
    task_names: list[str]
    autocast: Callable[[], Any]  # context manager for the training forward passes
    log: Callable[[str, float], None] = lambda name, value: None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dgen: torch.Generator | None = None  # the run's stream on the device, for per-pixel noise (``gen`` itself on the CPU)
    ranks: Ranks = SINGLE  # the processes training together; a method that trains a network of its own outside
    # ``g_parameters`` on the batches calls ``ranks.average(its parameters)`` before that network's update

    def __post_init__(self) -> None:
        if self.dgen is None:
            self.dgen = self.gen

    def side_stream(self, *keys: object) -> torch.Generator:
        """A random stream of its own for the work named by ``keys`` (``rng.side_stream`` of the run's seed)."""
        return side_stream(self.cfg.seed, *keys)

    def sample(self, task: Task, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random training pairs of ``task`` on the training device (``Task.sample`` with the run's streams)."""
        return task.sample(n, self.gen, self.device, self.dgen)


def _uniform(n: int) -> torch.Tensor:
    return torch.full((n,), 1.0 / max(n, 1))


@dataclass
class Batch:
    """One step's training samples: sources ``x`` and targets ``y``, and for each sample the task it stands for
    (``task``), the weight of its content loss (``weight``, summing to at most 1 over the batch: the loop's
    content loss is ``sum_i weight_i * MSE(G(x_i), y_i)``), where it came from (``source``, one of ``SOURCES``)
    and whether the discriminator judges it (``judged``: D's loss and G's adversarial term cover these samples).

    Most batches weigh every sample alike (``of``, ``cat``); a method with an explicit mixture, such as the
    paper's eq. 3, gives each part its share of the loss (``mix``), whatever the number of samples in it.
    """

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor  # (N,) long
    weight: torch.Tensor  # (N,) float, sums to 1
    source: torch.Tensor  # (N,) long, an index into SOURCES
    judged: torch.Tensor  # (N,) bool
    gan_scale: float = 1.0  # the factor of the GAN losses on this batch: 1, except on one process's share of a batch (``distributed``)

    _FIELDS: ClassVar[tuple[str, ...]] = ("x", "y", "task", "weight", "source", "judged")
    SOURCES: ClassVar[tuple[str, ...]] = ("current", "stored", "association", "generated")
    CURRENT: ClassVar[int] = 0  # the current task's own pairs
    STORED: ClassVar[int] = 1  # pairs of a past task kept in memory
    ASSOCIATION: ClassVar[int] = 2  # sources made from current targets by a model of a past task's degradation
    GENERATED: ClassVar[int] = 3  # sources sampled from a generative model, with pseudo-targets

    def __len__(self) -> int:
        return self.x.shape[0]

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, task: int | torch.Tensor, source: int = 0, judged: bool = True) -> Batch:
        """Samples of one kind, each weighing the same; ``task`` one index for all or one per sample."""
        n = x.shape[0]
        task = torch.full((n,), task, dtype=torch.long) if isinstance(task, int) else task.long()
        return cls(x, y, task, _uniform(n), torch.full((n,), source, dtype=torch.long), torch.full((n,), judged))

    @classmethod
    def cat(cls, *parts: Batch) -> Batch:
        """The parts' samples together, each sample weighing the same."""
        out = cls._join([p for p in parts if len(p)])
        out.weight = _uniform(len(out))
        return out

    @classmethod
    def mix(cls, *parts: tuple[Batch, float]) -> Batch:
        """The parts' samples together, part k weighing ``share_k`` of the content loss in all (its samples
        alike). The shares of the parts that have samples are normalised to sum to 1 when they sum to more; a
        share of 0 keeps a part's samples out of the content loss (a method's own term may cover them)."""
        parts = tuple((p, s) for p, s in parts if len(p))
        total = max(sum(s for _, s in parts), 1.0)
        out = cls._join([p for p, _ in parts])
        out.weight = torch.cat([_uniform(len(p)) * (s / total) for p, s in parts])
        return out

    @classmethod
    def _join(cls, parts: list[Batch]) -> Batch:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in cls._FIELDS))

    def split(self, n: int) -> tuple[Batch, Batch]:
        """The first ``n`` samples and the rest, each part weighing its samples alike."""
        parts = tuple(Batch(*(getattr(self, f)[sl] for f in self._FIELDS)) for sl in (slice(0, n), slice(n, None)))
        for p in parts:
            p.weight = _uniform(len(p))
        return parts

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.x.to(device, non_blocking=True),
            self.y.to(device, non_blocking=True),
            self.task,
            self.weight.to(device, non_blocking=True),
            self.source,
            self.judged,
            self.gan_scale,
        )

    def where(self, source: int) -> torch.Tensor:
        """A boolean mask of the samples from ``source``."""
        return self.source == source


@dataclass
class Step:
    """One training step as a method's loss hooks see it."""

    t: int  # task index
    step: int  # step within the task
    batch: Batch
    fake: torch.Tensor  # G(x), with gradient in the G step and detached in the D step

    @property
    def x(self) -> torch.Tensor:
        return self.batch.x

    @property
    def y(self) -> torch.Tensor:
        return self.batch.y


class Method:
    """Base class: with no hook overridden it is sequential fine-tuning (TL)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as printed in tables
    cite: ClassVar[str] = ""  # the paper it follows
    options: ClassVar[tuple[Option, ...]] = ()
    needs_task_id: ClassVar[bool] = False  # evaluated with the true task identity
    needs_discriminator: ClassVar[bool] = False  # acts on D: meaningless without the adversarial term
    # ``batch`` may be called ahead of the steps, in a background thread: it draws only from the run's streams,
    # no other hook draws from them during a task's steps, and it reads nothing the steps change. The loop
    # then makes the next batches while the current step trains (in the same order, so with the same draws);
    # a method that cannot promise this sets it False and its batches are made when they are needed.
    batch_ahead: ClassVar[bool] = True

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Refuse a configuration the method cannot run on (before anything is trained)."""
        if getattr(cfg, "router", False) and not cls.needs_task_id:
            raise UserError(
                f"--router on: method {cls.name} is not told the task identity at test, so it has nothing to route; leave it out or give --router off"
            )
        if cls.needs_discriminator and cfg.lambda_adv <= 0:
            raise UserError(
                f"method {cls.name} regularises the discriminator, which is off at --lambda-adv {cfg.lambda_adv:g}; "
                "give --lambda-adv 1e-3 (the paper's objective) or leave the method out"
            )

    def check_tasks(self, tasks: list[Task]) -> None:
        """Refuse a benchmark the method's options cannot run on (called before anything is trained)."""

    def __init__(self, ctx: Context, **opts: Any):
        self.ctx = ctx
        self.settings = SimpleNamespace(**self.resolve_options(opts))  # this run's value of each of ``options``

    @classmethod
    def resolve_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        known = {o.name: o for o in cls.options}
        unknown = set(given) - set(known)
        if unknown:
            raise UserError(f"method {cls.name}: unknown option(s) {', '.join(sorted(unknown))}")
        return {n: o.parse(given[n]) if n in given else o.default for n, o in known.items()}

    @classmethod
    def needs(cls, option: str) -> dict[str, Any]:
        """The other options that ``option`` acts only with (a sweep of it sets them). Default: none."""
        return {}

    # ---- hooks -------------------------------------------------------------------------
    @classmethod
    def build_generator(cls, cfg: RunConfig) -> nn.Module:
        """The generator this method trains (built before the method, with the run's seed). Default: ``--arch``'s."""
        from ..nets import build_generator

        return build_generator(cfg)

    def before_task(self, t: int, task: Task) -> None:
        """Called before training on task t."""

    def g_parameters(self) -> Iterable[nn.Parameter]:
        """The generator parameters the optimiser trains on the coming task (read after before_task)."""
        return self.ctx.G.parameters()

    def batch(self, t: int, task: Task) -> Batch:
        """The training samples of one step. Default: a batch of the current task."""
        return Batch.of(*self.ctx.sample(task, self.ctx.cfg.batch_size), t)

    def generator_loss(self, step: Step) -> torch.Tensor | None:
        """Extra generator loss (penalties, distillation); None for none."""
        return None

    def discriminator_loss(self, step: Step) -> torch.Tensor | None:
        """Extra discriminator loss (a penalty on its weights); None for none. Its gradient joins D's after
        ``discriminator_gradients``."""
        return None

    def discriminator_gradients(self, step: Step) -> None:
        """Called in the D step while D's ``.grad`` holds the gradient of the GAN loss alone (before the
        method's own ``discriminator_loss`` joins it and before the update)."""

    def after_step(self, step: Step) -> None:
        """Called after both optimiser steps."""

    def after_task(self, t: int, task: Task) -> None:
        """Called after training on task t, while its data is still there: keep what is remembered."""

    def memory(self) -> dict[str, int]:
        """What the method keeps between tasks, in bytes as stored, by kind (e.g. {"pairs": ...})."""
        return {}

    def pictures(self, seen: list[Task]) -> dict[str, list[list[torch.Tensor]]]:
        """Pictures of the method's own machinery after a task, as rows of image batches by file name
        (written next to the sample grids). ``seen`` are the tasks so far, for their test images only."""
        return {}

    def eval_generator(self, t: int) -> nn.Module:
        """The generator that answers for task t at test time."""
        return self.ctx.G

    # ---- saving and resuming -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What the method holds beyond G and D (its memory, counters, its own networks and optimisers), as
        tensors, numbers, strings, lists and dicts. Default: nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any], seen: list[Task]) -> None:
        """Restore what ``state_dict`` returned, on a method just built (G and D get their saved weights right
        after, in place). ``seen``: the tasks ``before_task`` had been given when the state was saved. On a resume
        in the middle of a task ``before_task`` is not called again: what it sets up must be in the state."""

    @classmethod
    def generator_from_checkpoints(cls, cfg: RunConfig, load: Callable[[int], dict[str, torch.Tensor]], after: int, task: int) -> nn.Module:
        """The generator that answers for task ``task`` once task ``after`` is trained (0-based), built from the
        run's saved generators (``load(k)``: the generator's tensors saved after task k), as ``eval_generator``
        answers in the run. Default: the generator saved after task ``after``."""
        G = cls.build_generator(cfg)
        G.load_state_dict(load(after))
        return G

    # ---- derived -----------------------------------------------------------------------
    def memory_bytes(self) -> int:
        return int(sum(self.memory().values()))
