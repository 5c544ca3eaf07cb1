"""LiSS (Schmidt et al., 2020): self-supervised auxiliary tasks on the generator's encoder, plus distillation of
the encoder's features towards the previous encoder.

*Original.* Lifelong Self-Supervision for unpaired translation (CycleGAN): the generators' encoders learn
self-supervised tasks (rotation prediction, jigsaw puzzles, ...) and the translation one after another; to keep
what earlier tasks taught the encoder, a reference encoder (an exponential moving average of the past encoders,
``ref = a * new + (1 - a) * ref``, a = 1 by default: the latest) is kept frozen, and the encoder's features of
the current images are pulled towards the reference's with an L1 distillation loss (weight 5; rotation and
jigsaw weigh 1 each beside a cycle loss of weight 10).

*Here.* The U-Net's encoder (its four stride-2 stages) carries the auxiliary tasks while each translation task
trains, and the distillation protects it from one task to the next. Every step the current sources are rotated
by a random multiple of 90 degrees (after a centre crop to a square) and/or cut into a 2 x 2 grid whose tiles
are put in one of the 24 orders at random (``--liss-aux``); the encoder's bottleneck features of these images
feed small heads (pool to 2 x 2, two linear layers) that predict the rotation (4 classes) and the order (24
classes) with a cross-entropy loss weighted by ``--liss-lambda-aux``. The heads are trained with the generator
(``g_parameters``) and kept from task to task. After each task the encoder is frozen into the reference
(``helpers.FrozenTeacher``, float16; merged as a moving average when ``--liss-ema`` < 1); while the next task
trains, the mean absolute difference between the encoder's and the reference's features of the current sources,
at all four levels (the decoder reads all of them through the skip connections), is added with weight
``--liss-lambda-distill``. The paper's weights sit beside an L1 cycle loss of about 1 to 2 on [-1, 1] images;
our content loss is an MSE of about 1e-3 to 3e-2, so both are scaled down. Adam adapts each weight's step to its
own gradient's scale, so the heads learn their task at any weight; only the shared encoder feels the balance,
and a larger auxiliary weight costs the first task more. The encoder is held, but the U-Net's decoder, which
makes most of the translation, is not, so forgetting barely changes at any distillation weight: the paper's
Table 1 has LiSS holding; with a U-Net it does not (an early restore4, seed 0: BWT -8.2 against TL's -9.0;
docs/results.md, "How the baselines were set up"). Nothing is distilled during the first task.

*Memory kept:* the reference encoder in float16 (``encoder``) and the auxiliary heads in float32 (``heads``).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..memory import module_bytes
from .base import Method, Option
from .helpers import FrozenTeacher

AUX_TASKS = ("rotation", "jigsaw")
JIGSAW_ORDERS = torch.tensor(list(itertools.permutations(range(4))))  # the 24 orders of a 2 x 2 grid's tiles


def encoder_stages(G: nn.Module) -> nn.ModuleList:
    down = getattr(G, "down", None)
    if not isinstance(down, nn.ModuleList):
        raise UserError("liss: the generator has no U-Net encoder (``down`` stages)")
    return down


def encode(stages: Iterable[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The encoder's features at every level, as the U-Net computes them (input mapped to [-1, 1])."""
    z = x * 2 - 1
    feats = []
    for stage in stages:
        z = stage(z)
        feats.append(z)  # the next stage's in-place activation turns it into the skip the decoder reads
    return feats


def rotations(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Square centre crops of ``x`` rotated by k * 90 degrees, k random; returns the images and k."""
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    k = torch.randint(0, 4, (x.shape[0],), generator=gen).to(x.device)
    turns = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])  # four batch ops, no loop over images
    return turns[k, torch.arange(x.shape[0], device=x.device)], k


def jigsaw(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` cut into a 2 x 2 grid whose tiles are put in a random one of the 24 orders; returns images and order."""
    n, c, h, w = x.shape
    label = torch.randint(0, len(JIGSAW_ORDERS), (n,), generator=gen)
    tiles = x.view(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(n, 4, c, h // 2, w // 2)
    order = JIGSAW_ORDERS[label].to(x.device)
    tiles = tiles[torch.arange(n, device=x.device)[:, None], order]
    out = tiles.view(n, 2, 2, c, h // 2, w // 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
    return out, label.to(x.device)


class AuxHead(nn.Module):
    """Classifier on the encoder's bottleneck: pool to 2 x 2 (keeps the layout), two linear layers."""

    def __init__(self, channels: int, classes: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, hidden), nn.ReLU(True), nn.Linear(hidden, classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LiSS(Method):
    name = "liss"
    batch_ahead = False  # its loss draws from the run's stream every step
    title = "LiSS"
    cite = "Schmidt et al. 2020, Towards lifelong self-supervision for unpaired image-to-image translation [39]"
    options = (
        Option("liss_aux", "rotation,jigsaw", "self-supervised tasks of the encoder: rotation, jigsaw or both (comma-separated)"),
        Option("liss_lambda_aux", 0.001, "weight of each auxiliary cross-entropy (the paper: 1, beside a cycle loss of 10)", low=0),
        Option("liss_lambda_distill", 0.05, "weight of the L1 distillation of encoder features (the paper: 5)", low=0),
        Option("liss_ema", 1.0, "reference encoder = ema * new + (1 - ema) * previous reference (1: the latest encoder)", low=0, open_low=True, high=1),
    )

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.aux = [k.strip() for k in self.settings.liss_aux.split(",") if k.strip()]
        if not self.aux or any(k not in AUX_TASKS for k in self.aux) or len(set(self.aux)) != len(self.aux):
            raise UserError(f"--liss-aux: {self.settings.liss_aux!r}; name rotation, jigsaw or both")
        stages = encoder_stages(ctx.G)
        channels = [m for m in stages[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        classes = {"rotation": 4, "jigsaw": len(JIGSAW_ORDERS)}
        self.heads = nn.ModuleDict({k: AuxHead(channels, classes[k]) for k in self.aux}).to(ctx.device)
        self.reference: FrozenTeacher | None = None
        self._correct: dict[str, torch.Tensor] = {}

    @property
    def accuracy(self) -> dict[str, float]:
        """The auxiliary heads' accuracy on the last step's batch."""
        return {k: float(v) for k, v in self._correct.items()}

    def g_parameters(self):
        return itertools.chain(self.ctx.G.parameters(), self.heads.parameters())

    def generator_loss(self, step):
        x = step.x.detach()
        gen = self.ctx.gen
        batches, labels = [], {}
        if self.reference is not None:
            batches.append(("current", x))
        for k in self.aux:
            img, labels[k] = rotations(x, gen) if k == "rotation" else jigsaw(x, gen)
            batches.append((k, img))
        stages = encoder_stages(self.ctx.G)
        feats: dict[str, list[torch.Tensor]] = {}
        with self.ctx.autocast():
            if len({b.shape for _, b in batches}) == 1:  # one pass for all
                out = encode(stages, torch.cat([b for _, b in batches]))
                for i, (name, _) in enumerate(batches):
                    feats[name] = [f[i * x.shape[0] : (i + 1) * x.shape[0]] for f in out]
            else:
                feats = {name: encode(stages, b) for name, b in batches}
            logits = {k: self.heads[k](feats[k][-1]) for k in self.aux}
        loss = 0.0
        for k in self.aux:
            loss = loss + self.settings.liss_lambda_aux * F.cross_entropy(logits[k].float(), labels[k])
            self._correct[k] = (logits[k].detach().argmax(1) == labels[k]).float().mean()
        if self.reference is not None:
            loss = loss + self.settings.liss_lambda_distill * self.distillation(x, feats["current"])
        return loss

    def distillation(self, x: torch.Tensor, feats: list[torch.Tensor] | None = None) -> torch.Tensor | None:
        """Mean over levels of the mean absolute difference between the encoder's features of sources ``x``
        (``feats`` if already computed) and the reference's; None before the first task ends."""
        if self.reference is None:
            return None
        with self.ctx.autocast():
            if feats is None:
                feats = encode(encoder_stages(self.ctx.G), x)
            with torch.no_grad():
                ref = encode(self.reference.model, x)
        return sum((f.float() - r.float()).abs().mean() for f, r in zip(feats, ref)) / len(ref)

    def state_dict(self):
        return {"heads": self.heads.state_dict(), "reference": None if self.reference is None else self.reference.state_dict()}

    def load_state_dict(self, state, seen):
        self.heads.load_state_dict(state["heads"])
        self.reference = FrozenTeacher.restore(self.encoder_copy(), state["reference"])

    def encoder_copy(self) -> nn.Sequential:
        return nn.Sequential(*copy.deepcopy(encoder_stages(self.ctx.G)))

    def after_task(self, t, task):
        encoder = self.encoder_copy()
        if self.reference is not None and self.settings.liss_ema < 1:
            a = self.settings.liss_ema
            old = self.reference.model.state_dict()
            encoder.load_state_dict({k: a * v + (1 - a) * old[k] if v.is_floating_point() else v for k, v in encoder.state_dict().items()})
        self.reference = FrozenTeacher(encoder)

    def memory(self):
        out = {"heads": module_bytes(self.heads)}
        if self.reference is not None:
            out["encoder"] = self.reference.memory_bytes()
        return out
