"""FID and KID of a run: a task's score from its whole test split, the InceptionV3 pool3 features of the generator's
outputs against those of the task's targets (lower is better). See docs/metrics.md, "FID and KID in a run".

``InceptionFeatures`` maps a set of images to features (float64, (n, 2048)): a batch (N, C, H, W) or a list of
batches of different sizes (``--eval-full``), each image resized to 299x299 by the network, as pytorch-fid does;
a single channel (``--eval-space y``) is repeated to three. The features of a set given with ``cache=True`` (a
task's targets, which never change) are kept, keyed by the images' contents, so later evaluations of the task
(``--eval-every``, every later task's row of the matrix) pass only the outputs through the network.
``SetMeasure`` is what the ``fid`` and ``kid`` metrics load: the features (one network shared by both, so the
outputs go through it once for both) and the distance of two sets of them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .fid import fid, kernel_inception_distance
from .inception import FIDInception

BATCH = 16  # images through the network at once
CACHE_SETS = 64  # the target sets whose features are kept (a run has one a task)


def _batches(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        images = [images]
    out = []
    for b in images:
        if b.dim() != 4 or b.shape[1] not in (1, 3):
            raise ValueError(f"expected (N, 1 or 3, H, W) images, got {tuple(b.shape)}")
        out.append(b)
    return out


def content_key(images: torch.Tensor | Sequence[torch.Tensor]) -> str:
    """A digest of the images' shapes, types and values: the same set of images gives the same key."""
    h = hashlib.sha1()
    for b in _batches(images):
        t = b.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class InceptionFeatures:
    """pytorch-fid's InceptionV3 pool3 features of sets of images in [0, 1]; a cache of the sets given with
    ``cache=True``. ``computed`` counts the images that went through the network."""

    def __init__(self, weights_dir: str | os.PathLike | None = None, net: FIDInception | None = None):
        self.net = net if net is not None else FIDInception(weights_dir)
        self._on: dict[str, FIDInception] = {"cpu": self.net}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.computed = 0

    def _net(self, device: torch.device | str | None) -> FIDInception:
        dev = str(torch.device(device)) if device is not None else "cpu"
        if dev not in self._on:
            self._on[dev] = copy.deepcopy(self.net).to(dev)
        return self._on[dev]

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor], device: torch.device | str | None = None, cache: bool = False) -> np.ndarray:
        """The (n, 2048) float64 features of every image of ``images`` (a batch or a list of batches), computed on
        ``device`` (default: the CPU); with ``cache``, kept for the next call with the same images."""
        key = content_key(images) if cache else None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        net = self._net(device)
        feats = []
        with torch.no_grad():
            for b in _batches(images):
                for i in range(0, b.shape[0], BATCH):
                    x = b[i : i + BATCH].float()
                    if x.shape[1] == 1:
                        x = x.expand(-1, 3, -1, -1)
                    feats.append(net(x).double().cpu().numpy())
                    self.computed += x.shape[0]
        out = np.concatenate(feats) if feats else np.zeros((0, self.net.fc.in_features))
        if key is not None:
            self._cache[key] = out
            while len(self._cache) > CACHE_SETS:
                self._cache.popitem(last=False)
        return out


@functools.lru_cache(maxsize=4)
def inception_features(weights_dir: str | None) -> InceptionFeatures:
    """The features of ``weights_dir``'s InceptionV3, one network (and one cache) a process for FID and KID."""
    return InceptionFeatures(weights_dir)


def kid_mean(features1, features2) -> float:
    """KID's mean over subsets (``kernel_inception_distance``, subsets capped at the set size)."""
    return kernel_inception_distance(features1, features2)[0]


class SetMeasure:
    """A set metric as a run loads it: ``features`` (images -> (n, d) features) and ``distance`` (outputs' features,
    targets' features -> a float, lower is better)."""

    DISTANCES = {"fid": fid, "kid": kid_mean}

    def __init__(self, name: str, features: InceptionFeatures):
        self.name = name
        self.features = features
        self.distance = self.DISTANCES[name]

    def __call__(self, outputs: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor | Sequence[torch.Tensor], device=None) -> float:
        """The distance of ``outputs`` from ``targets`` (whose features are cached)."""
        return self.distance(self.features(outputs, device), self.features(targets, device, cache=True))


def load_set_measure(name: str, weights_dir: str | None) -> SetMeasure:
    """``fid`` or ``kid`` with the InceptionV3 of ``weights_dir`` (a one-line UserError naming the file when missing)."""
    return SetMeasure(name, inception_features(weights_dir))
