"""Training on several processes (``torchrun --nproc_per_node=N -m assocgan run ...``): data parallel, one
model replica a process, gradients averaged after every backward pass.

Every rank holds the same random streams (seeded alike) and makes the same global batch of ``--batch-size``
samples; each trains on its own share of it (samples ``rank``, ``rank + N``, ...; disjoint, together the
whole batch). Its content weights and GAN loss are scaled so that the average over the ranks of each share's
loss is the global batch's loss, and the loop averages the gradients (and the losses, for the logs and the
check of non-finite values) over the ranks before every optimiser step: the update every rank makes is the
one a single process makes on the whole batch, up to the order of float summation. So the weights, the
streams and whatever a method builds from them (mappers, Fisher, stored pairs, teachers) stay the same on
every rank; ``Ranks.check_same`` compares them after every task. Only rank 0 evaluates and writes.

With one process (no ``torchrun``) ``SINGLE`` stands in: every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Ranks:
    """The processes one run trains on: ``world`` of them, this one ``rank`` (0 is the one that writes)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1

    # ---- the batch -------------------------------------------------------------------------
    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise UserError(
                f"--batch-size {batch_size}: the global batch is shared by {self.world} processes and must be a multiple of "
                f"{self.world}; give --batch-size {max(self.world, batch_size - batch_size % self.world)} "
                f"or {batch_size + self.world - batch_size % self.world}"
            )

    def share(self, batch):
        """This rank's share of a global ``Batch``: every ``world``-th sample from ``rank``. Its content weights
        are multiplied by ``world`` and its ``gan_scale`` set so that the ranks' mean loss is the batch's."""
        if not self.several:
            return batch
        sl = slice(self.rank, None, self.world)
        n_judged = int(batch.judged.sum())
        mine = type(batch)(*(getattr(batch, f)[sl] for f in batch._FIELDS))
        mine.weight = mine.weight * self.world
        mine.gan_scale = self.world * int(mine.judged.sum()) / n_judged if n_judged else 0.0
        return mine

    # ---- gradients and losses --------------------------------------------------------------
    def average(self, params: Iterable[torch.nn.Parameter], losses: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Average the gradients of ``params`` (and the scalar ``losses``) over the ranks, in place, in one
        all-reduce; a parameter without a gradient counts as a zero gradient. Returns the averaged losses.
        Every rank must call it with the same parameters in the same order."""
        losses = dict(losses or {})
        if not self.several:
            return losses
        params = [p for p in params if p.requires_grad]
        if not params and not losses:
            return losses
        dev = params[0].device if params else next(iter(losses.values())).device
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        parts += [v.detach().reshape(1).to(dev, torch.float32) for v in losses.values()]
        flat = torch.cat(parts)
        dist.all_reduce(flat)
        flat /= self.world
        at = 0
        for p in params:
            n = p.numel()
            avg = flat[at : at + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = avg.clone()
            else:
                p.grad.copy_(avg)
            at += n
        return {k: flat[at + i].reshape(()) for i, k in enumerate(losses)}

    # ---- what rank 0 alone did -------------------------------------------------------------
    def barrier(self) -> None:
        if self.several:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled: settings, saved states)."""
        if not self.several:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def leading(self) -> Iterator[Callable[[Any], None]]:
        """Rank 0's work before the other ranks get its plan (``send(plan)``, received by ``broadcast(None)``):
        if the body fails before sending, the others receive None and stop too, instead of waiting for ever."""
        sent = []

        def send(plan: Any) -> None:
            self.broadcast(plan)
            sent.append(True)

        try:
            yield send
        except BaseException:
            if not sent:
                self.broadcast(None)
            raise

    def sync_streams(self, gen: torch.Generator, dgen: torch.Generator) -> None:
        """Rank 0's random streams on every rank (after rank 0 alone drew from them: pictures of a method)."""
        if not self.several:
            return
        state = self.broadcast({"gen": gen.get_state(), "dgen": None if dgen is gen else dgen.get_state(), "torch": torch.get_rng_state()})
        gen.set_state(state["gen"])
        if dgen is not gen:
            dgen.set_state(state["dgen"])
        torch.set_rng_state(state["torch"])

    # ---- checks ----------------------------------------------------------------------------
    def check_same(self, what: str, parts: dict[str, Any], tolerance: float = 0.0) -> None:
        """A RuntimeError if ``parts`` (tensors, or dicts and lists of them, or generators) differ between the
        ranks: each part is summarised by two sums and compared with rank 0's, within ``tolerance`` (relative)."""
        if not self.several:
            return
        mine = {k: fingerprint(v) for k, v in parts.items()}
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, mine)
        for r, theirs in enumerate(everyone):
            for k, (a, b) in ((k, (mine[k], theirs[k])) for k in mine):
                if any(abs(x - y) > tolerance * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b)) or len(a) != len(b):
                    raise RuntimeError(f"{what}: {k} differs between rank {self.rank} and rank {r} ({a} vs {b}); the processes no longer train the same model")


SINGLE = Ranks()


def fingerprint(obj: Any) -> list[float]:
    """Two sums (plain and position-weighted, float64) of every number in ``obj``, and their count."""
    tensors: list[torch.Tensor] = []

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            tensors.append(v.detach().reshape(-1).to("cpu", torch.float64))
        elif isinstance(v, torch.Generator):
            tensors.append(v.get_state().to(torch.float64))
        elif isinstance(v, torch.nn.Module):
            walk(v.state_dict())
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            tensors.append(torch.tensor([float(v)], dtype=torch.float64))

    walk(obj)
    if not tensors:
        return [0.0, 0.0, 0.0]
    flat = torch.cat(tensors)
    flat = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    pos = torch.arange(1, flat.numel() + 1, dtype=torch.float64) / flat.numel()
    return [float(flat.sum()), float((flat * pos).sum()), float(flat.numel())]


def start(device: str | None = None) -> tuple[Ranks, str | None]:
    """The processes of this run as ``torchrun`` started them (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), with
    the process group made (nccl on CUDA, gloo on the CPU), and the device this rank trains on; ``SINGLE`` and
    ``device`` unchanged without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE, device
    ranks = Ranks(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):  # one GPU a process: the local rank's
        if torch.cuda.device_count() <= ranks.local_rank:
            raise UserError(
                f"torchrun started {world} processes a node but this node has {torch.cuda.device_count()} CUDA device(s); "
                "give --nproc_per_node at most that, or --device cpu"
            )
        device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    return ranks, device


def stop(ranks: Ranks) -> None:
    if ranks.several and dist.is_initialized():
        dist.destroy_process_group()
