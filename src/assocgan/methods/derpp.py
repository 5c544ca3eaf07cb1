"""DER++ (Buzzega et al., NeurIPS 2020): replay of stored pairs together with the generator's own outputs on them.

*Original.* Dark Experience Replay keeps, for each stored training input, the network's logits at the time it
was stored (its "dark knowledge") and, beside the current task's loss, matches the network's logits on a batch of
stored inputs to the stored ones (alpha x MSE); DER++ adds the ordinary loss on another stored batch against its
stored labels (beta x the task loss). The memory is a reservoir sample of the whole stream of training samples,
filled and replayed from the first step on, without task boundaries.

*Here.* The generator's output image stands for the logits: the store keeps, for each stored source x, its target
y and the generator's output G(x) at the time it was stored (the output of that training step's forward pass,
before the step's update). Each step then adds, beside the current task's loss (content and adversarial, as
TL), ``--derpp-alpha`` x MSE(G(x'), z') on one stored batch (z' the stored outputs) and ``--derpp-beta`` x
MSE(G(x''), y'') on another (y'' the stored targets); the two batches are drawn independently, each of
``--batch-size`` distinct stored items (all of them while fewer are stored), with random horizontal flips (the
same flip on a source and on its stored output or target), from the run's random stream, as replay draws its
pairs; the two go through the generator in one forward pass. The stored batches are not judged by the
discriminator and are not in the content loss: they enter through the two terms only, and the two terms are
not multiplied by ``--lambda-content``. A term of weight 0 draws nothing, so at alpha = beta = 0 the run trains
exactly as TL (the store is still filled, from a stream of its own).

The buffer is the paper's reservoir over the stream of every training sample the generator sees (each step's
current pairs, as augmented): while it is not full every sample is stored; after that the n-th sample seen
replaces a uniformly chosen stored item with probability capacity / n. So the buffer is at every moment a uniform
sample of the stream, past tasks share it in proportion to the steps they trained (equal shares here, where every
task trains ``--steps``), and it needs no task boundary; a per-task quota (replay's) would fix the shares instead
and could not store the outputs along each task's training, which is what DER's regulariser samples. The
reservoir's choices come from a random stream of the method's own (``rng.side_stream``), so that the run's stream
draws only what the generator trains on. Its size is ``--derpp-buffer`` items, or ``--derpp-bytes`` in bytes
as stored (the items that fit).

*Departures.* Regression outputs instead of logits: the alpha term matches images (MSE per pixel, as the content
loss) where the paper matches pre-softmax class scores, and the beta term is the content MSE where the paper's is
the cross-entropy. The stored outputs are float16 (the outputs are not clamped to [0, 1] and their differences
below one grey level are what the term preserves; float16 keeps about three significant digits); the sources and
targets are uint8, as replay stores them (with ``--fresh-degradations``, where training draws sources as floats,
the stored source is rounded to uint8). The two stored batches share one forward pass (two in the paper's
code; the same with instance normalisation, which is per sample). It trains on one process only: each process
sees only its share of a batch and would store a different reservoir.

*Memory.* The stored items, in bytes as stored: items x 3 x H x W x (1 + 1 + 2), sources and targets uint8,
outputs float16. It grows with every stored sample until the buffer is full and then stays there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.tasks import random_flips, to_float
from ..errors import UserError
from ..memory import image_bytes, tensor_bytes
from .base import Batch, Method, Option

OUTPUT_DTYPE = torch.float16  # how the stored outputs are kept


def item_bytes(shape: torch.Size | tuple[int, ...]) -> int:
    """Bytes of one stored item of images of ``shape`` (C, H, W): its source and target uint8, its output float16."""
    n = int(torch.Size(shape).numel())
    return n * (1 + 1 + torch.empty((), dtype=OUTPUT_DTYPE).element_size())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as uint8 on the CPU (exact for images that came from uint8)."""
    return images.detach().float().mul(255).round_().clamp_(0, 255).to("cpu", torch.uint8)


class DERpp(Method):
    name = "derpp"
    batch_ahead = False  # the stored batches come from a buffer that every step changes
    title = "DER++ (Buzzega et al.)"
    cite = "Buzzega et al., Dark Experience for General Continual Learning: a Strong, Simple Baseline (NeurIPS 2020)"
    options = (
        Option("derpp_alpha", 0.5, "weight of matching the generator's stored outputs on a stored batch (MSE)", low=0),
        Option("derpp_beta", 0.5, "weight of the content MSE on another stored batch against its stored targets", low=0),
        Option("derpp_buffer", 200, "stored items (source, target, output), a reservoir over the stream (ignored with --derpp-bytes)", low=1),
        Option("derpp_bytes", 0.0, "the buffer as a byte budget of stored items (0: use --derpp-buffer)", low=0),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        if ctx.ranks.several:
            raise UserError("method derpp trains on one process only: each process would store a different reservoir of its share of the batches")
        self.x = torch.empty(0, dtype=torch.uint8)  # the stored sources, (capacity, C, H, W) once the first arrives
        self.y = torch.empty(0, dtype=torch.uint8)  # their targets
        self.z = torch.empty(0, dtype=OUTPUT_DTYPE)  # the generator's outputs on them when they were stored
        self.filled = 0  # items stored so far (at most the capacity)
        self.seen = 0  # samples of the stream seen so far
        # provenance, for inspection only (a few bytes, not counted): each item's task and the step that stored it
        self.task_of = torch.empty(0, dtype=torch.long)
        self.step_of = torch.empty(0, dtype=torch.long)
        self.reservoir = ctx.side_stream("derpp", "reservoir")
        self.replayed: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # this step's stored batches: rows, x, target

    # ---- the buffer ----------------------------------------------------------------------------
    def capacity(self, shape: torch.Size | tuple[int, ...]) -> int:
        """Items the buffer holds for images of ``shape``."""
        if self.settings.derpp_bytes > 0:
            return int(self.settings.derpp_bytes) // item_bytes(shape)
        return int(self.settings.derpp_buffer)

    def slots(self, n: int) -> list[tuple[int, int]]:
        """The reservoir's decisions for the next ``n`` samples of the stream: (sample, slot) for those stored."""
        cap, out = self.x.shape[0], []
        for i in range(n):
            self.seen += 1
            if self.filled < cap:
                out.append((i, self.filled))
                self.filled += 1
            else:
                r = int(torch.randint(0, self.seen, (), generator=self.reservoir))
                if r < cap:
                    out.append((i, r))
        return out

    def store(self, t: int, step: int, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        """Offer the samples ``x``, ``y`` and the generator's outputs ``out`` on them to the reservoir."""
        if self.x.shape[0] == 0:
            shape = tuple(x.shape[1:])
            cap = self.capacity(shape)
            self.x, self.y = (torch.zeros((cap, *shape), dtype=torch.uint8) for _ in range(2))
            self.z = torch.zeros((cap, *shape), dtype=OUTPUT_DTYPE)
            self.task_of, self.step_of = (torch.zeros(cap, dtype=torch.long) for _ in range(2))
        chosen = self.slots(x.shape[0])
        if not chosen:
            return
        rows = torch.tensor([i for i, _ in chosen])
        at = torch.tensor([s for _, s in chosen])
        dev_rows = rows.to(x.device)
        self.x[at] = to_uint8(x[dev_rows])
        self.y[at] = to_uint8(y[dev_rows])
        self.z[at] = out[dev_rows].detach().to("cpu", OUTPUT_DTYPE)
        self.task_of[at] = t
        self.step_of[at] = step

    def draw(self, outputs: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A stored batch from the run's stream: its rows, its sources and (``outputs``) its stored outputs or its
        targets, on the training device, with random flips."""
        gen, device = self.ctx.gen, self.ctx.device
        rows = torch.randperm(self.filled, generator=gen)[: self.ctx.cfg.batch_size]
        x = to_float(self.x[rows], device)
        target = self.z[rows].to(device).float() if outputs else to_float(self.y[rows], device)
        x, target = random_flips(gen, x, target)
        return rows, x, target

    # ---- hooks ---------------------------------------------------------------------------------
    def check_tasks(self, tasks):
        shape = tuple(tasks[0].train_x.shape[1:])
        if self.capacity(shape) < 1:
            raise UserError(f"--derpp-bytes {self.settings.derpp_bytes:g}: too small to keep one item (one is {item_bytes(shape)} bytes)")

    def batch(self, t, task):
        current = super().batch(t, task)
        self.replayed = {}
        if self.filled:
            for term, outputs in (("alpha", True), ("beta", False)):
                if getattr(self.settings, f"derpp_{term}") > 0:
                    self.replayed[term] = self.draw(outputs)
        return current

    def generator_loss(self, step):
        if not self.replayed:
            return None
        terms = list(self.replayed)
        x = torch.cat([self.replayed[k][1] for k in terms])
        with self.ctx.autocast():
            out = self.ctx.G(x)
        loss, at = None, 0
        for k in terms:
            target = self.replayed[k][2]
            term = getattr(self.settings, f"derpp_{k}") * F.mse_loss(out[at : at + target.shape[0]].float(), target)
            loss = term if loss is None else loss + term
            at += target.shape[0]
        return loss

    def after_step(self, step):
        rows = step.batch.where(Batch.CURRENT).nonzero().flatten().to(step.x.device)
        self.store(step.t, step.t * self.ctx.cfg.steps + step.step, step.x[rows], step.y[rows], step.fake[rows])

    def memory(self):
        n = self.filled
        return {"pairs": image_bytes(self.x[:n]) + image_bytes(self.y[:n]), "outputs": tensor_bytes(self.z[:n])}

    # ---- saving and resuming -------------------------------------------------------------------
    def state_dict(self):
        n = self.filled
        return {
            "capacity": self.x.shape[0],
            "x": self.x[:n].clone(),
            "y": self.y[:n].clone(),
            "z": self.z[:n].clone(),
            "task_of": self.task_of[:n].clone(),
            "step_of": self.step_of[:n].clone(),
            "seen": self.seen,
            "reservoir": self.reservoir.get_state(),
        }

    def load_state_dict(self, state, seen):
        cap, n = int(state["capacity"]), int(state["x"].shape[0])
        self.filled, self.seen = n, int(state["seen"])
        if cap:
            shape = tuple(state["x"].shape[1:])
            self.x, self.y = (torch.zeros((cap, *shape), dtype=torch.uint8) for _ in range(2))
            self.z = torch.zeros((cap, *shape), dtype=OUTPUT_DTYPE)
            self.task_of, self.step_of = (torch.zeros(cap, dtype=torch.long) for _ in range(2))
            for name in ("x", "y", "z", "task_of", "step_of"):
                getattr(self, name)[:n] = state[name]
        self.reservoir.set_state(state["reservoir"])
