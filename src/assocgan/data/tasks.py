"""A task: named paired images with a train and a test split."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .degradations import Degradation


def to_float(u8: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 images as floats in [0, 1] on ``device`` (default: where they are). They cross to the device as
    uint8 (a quarter of the bytes), from pinned memory when it is a CUDA device, and are converted there."""
    if device is not None and torch.device(device) != u8.device:
        device = torch.device(device)
        if device.type == "cuda":
            u8 = u8.pin_memory()
        u8 = u8.to(device, non_blocking=True)
    return u8.float().div_(255)


def random_flips(gen: torch.Generator, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random horizontal flips (each image with probability 1/2) applied in place to aligned batches
    (drawn from ``gen`` on the CPU, applied where the batches are)."""
    flip = torch.rand(batches[0].shape[0], generator=gen) < 0.5
    if batches[0].device.type != "cpu":
        flip = flip.to(batches[0].device, non_blocking=True)
    for b in batches:
        b[flip] = b[flip].flip(-1)
    return batches


@dataclass
class Task:
    """Paired images x (source) -> y (target), stored as uint8 (N, 3, H, W).

    Training pairs are fixed, as a dataset holds them: ``train_x[i]`` is the one source of ``train_y[i]``.
    A built-in or recipe task also keeps the ``degrade`` that made its sources; with ``fresh`` set, a source
    is drawn anew from it at every draw instead (``--fresh-degradations``). Test pairs are always fixed.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    degrade: Degradation | None = None
    fresh: bool = False
    description: str = ""
    meta: dict = field(default_factory=dict)
    # ``--eval-full``: the test pairs at their own size, each (3, H, W) uint8; evaluated on these instead of
    # test_x/test_y (which stay the training-size crops the sample grids show)
    full_test: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        if self.fresh and self.degrade is None:
            raise ValueError(f"task {self.name}: fresh degradations need the degradation that made the pairs")
        if self.train_x.shape != self.train_y.shape or self.test_x.shape != self.test_y.shape:
            raise ValueError(f"task {self.name}: sources and targets differ in shape")

    @property
    def n_train(self) -> int:
        return self.train_y.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_y.shape[1:])

    def pair_bytes(self, n: int | None = None) -> int:
        """Bytes of ``n`` training pairs (all by default) stored as uint8 images."""
        n = self.n_train if n is None else n
        c, h, w = self.image_shape
        return 2 * n * c * h * w

    def stored_pairs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored training pairs at ``idx`` as floats in [0, 1] (never a fresh draw)."""
        return to_float(self.train_x[idx]), to_float(self.train_y[idx])

    def pairs(
        self, idx: torch.Tensor, gen: torch.Generator | None = None, device: torch.device | None = None, dgen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pairs at ``idx`` as floats in [0, 1] on ``device`` (default: the CPU): the stored ones, or fresh
        sources with ``fresh``, degraded on ``device`` with draws from ``dgen`` (default: ``gen``)."""
        if not self.fresh:
            return to_float(self.train_x[idx], device), to_float(self.train_y[idx], device)
        y = to_float(self.train_y[idx], device)
        return self.degrade(y, dgen or gen).clamp(0, 1), y

    def sample(
        self, n: int, gen: torch.Generator, device: torch.device | None = None, dgen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random training pairs with random horizontal flips, on ``device`` (default: the CPU). The pairs
        and flips are drawn from ``gen`` (on the CPU), a fresh degradation's noise from ``dgen`` (default ``gen``)."""
        idx = torch.randint(0, self.n_train, (n,), generator=gen)
        x, y = self.pairs(idx, gen, device, dgen)
        return random_flips(gen, x, y)

    def test_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.test_x), to_float(self.test_y)
