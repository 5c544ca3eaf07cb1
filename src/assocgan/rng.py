"""Random draws for tensors on any device.

A run has two random streams: ``gen`` on the CPU, for choices (which pairs, which task, flips), and a
stream on the training device for what is drawn per pixel (noise of degradations, of mappers and of
generative replay). On the CPU the two are one generator, so a CPU run draws exactly as it always did;
on a GPU the per-pixel noise is drawn where it is used instead of crossing the bus every step.

Work that a method option turns on or off (the Fisher's pairs after a task) draws from a ``side_stream`` of its
own, so that turning it off leaves every other draw of the run unchanged and two settings compare on the same
data, not on two random streams.
"""

from __future__ import annotations

import zlib

import torch


def device_generator(gen: torch.Generator, device: torch.device, seed: int) -> torch.Generator:
    """The run's stream on ``device``: ``gen`` itself on the CPU, a generator on the device seeded from ``seed`` otherwise."""
    if device.type == "cpu":
        return gen
    return torch.Generator(device=device).manual_seed(seed)


def side_stream(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator of its own for the run of ``seed`` and the work named by ``keys`` (e.g. "fisher", task
    index): the same keys give the same stream, and drawing from it leaves the run's streams untouched."""
    return torch.Generator().manual_seed(zlib.crc32(repr((seed, *keys)).encode()))


def _on(gen: torch.Generator | None) -> torch.device:
    return gen.device if gen is not None else torch.device("cpu")


def randn(shape, gen: torch.Generator | None, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``gen``, made on ``gen``'s device and put on ``device``."""
    return torch.randn(shape, generator=gen, dtype=dtype, device=_on(gen)).to(device)


def rand(shape, gen: torch.Generator | None, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` from ``gen``, made on ``gen``'s device and put on ``device``."""
    return torch.rand(shape, generator=gen, dtype=dtype, device=_on(gen)).to(device)
