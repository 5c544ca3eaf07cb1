"""Image quality metrics. PSNR and SSIM are computed here and nowhere else, under one evaluation ``Convention``
(uint8 rounding, colour space, border crop) applied by ``scores``.

Both take (N, C, H, W) tensors in [0, 1] and return one value per image.

``METRICS`` is the registry every consumer loops over (evaluation, results, CSVs, tables, plots, studies): a
``Metric`` says how a score is computed, printed and labelled, and which way is better. Adding a metric is one
entry there. A run scores the metrics it names (``--metrics``, ``Convention.metrics``), all from one set of outputs;
a metric that needs pretrained weights has a ``load`` hook, called once per run before any training
(``load_metrics``), that finds its files under ``--weights-dir`` and returns the per-image function.

Most metrics score each image (``per_image``) and a task's score is their mean; a set metric (FID, KID) scores a
task's whole test split at once (``set_scores``): one value from the features of all the outputs against those of
all the targets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UserError


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"expected two (N,C,H,W) tensors of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image (capped at 100 dB for identical images)."""
    _check(pred, target)
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))).float()


@functools.lru_cache(maxsize=8)
def gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian (float64) whose outer product with itself is SSIM's window."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def local_means(maps: torch.Tensor, g: torch.Tensor, scipy_path: bool | None = None) -> torch.Tensor:
    """Each map (..., H, W) averaged over the window ``outer(g, g)`` at every position where it fits whole
    (..., H - k + 1, W - k + 1), float64, as two 1-D passes. On a CPU, scipy.ndimage's correlation (what
    scikit-image's SSIM uses), as torch has no fast float64 convolution there (docs/performance.md, "SSIM");
    on a GPU, torch's convolution (``scipy_path`` chooses, for tests)."""
    k = g.numel()
    if maps.device.type == "cpu" if scipy_path is None else scipy_path:
        from scipy.ndimage import correlate1d

        w = g.numpy()
        out = correlate1d(correlate1d(maps.detach().contiguous().numpy(), w, axis=-1, mode="constant"), w, axis=-2, mode="constant")
        lo = k // 2
        return torch.from_numpy(out[..., lo : lo + maps.shape[-2] - k + 1, lo : lo + maps.shape[-1] - k + 1])
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:])
    g = g.to(maps.device)
    out = F.conv2d(F.conv2d(flat, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return out.reshape(*shape[:-2], *out.shape[-2:])


SSIM_WINDOW = 11  # the side of SSIM's Gaussian window


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, win_size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity, one value per image: 11x11 Gaussian window (sigma 1.5), mean over pixels and channels.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=...)``.
    """
    _check(pred, target)
    n, c, h, w = pred.shape
    if h < win_size or w < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size} pixels, got {h}x{w}")
    x = pred.double().reshape(n * c, h, w)
    y = target.double().reshape(n * c, h, w)
    maps = torch.stack([x, y, x * x, y * y, x * y], 1)  # the five local means at once
    means = local_means(maps, gaussian_1d(win_size, sigma))
    mu_x, mu_y = means[:, 0], means[:, 1]
    sxx = means[:, 2] - mu_x**2
    syy = means[:, 3] - mu_y**2
    sxy = means[:, 4] - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.reshape(n, c, -1).mean(2).mean(1).float()


@dataclass(frozen=True)
class Metric:
    """One image quality metric: its ``function`` ((N, C, H, W) outputs and targets in [0, 1] -> a value per
    image), the ``format`` its values are printed in, its axis ``label``, and its direction.

    A metric that needs pretrained weights (a perceptual distance) has ``load`` instead of ``function``:
    ``load(weights_dir)`` (the directory of ``--weights-dir``, or None) returns the per-image function, or raises a
    one-line ``UserError`` naming the files it misses; ``load_metrics`` calls it once per run, before training.

    A set metric (``per_image`` False: FID, KID) has no value per image: its ``load`` returns a function of two sets
    (all the outputs of a task's test split, all its targets: a batch or a list of batches) giving one float
    (``deepmetrics.sets.SetMeasure``); ``scores`` leaves it out and ``set_scores`` computes it.

    The direction decides what "better" means everywhere: the best of several scores is the largest for a
    higher-is-better metric and the smallest otherwise. ``gain(new, old)`` is the improvement from ``old`` to
    ``new``, positive when ``new`` is better, so that the summaries keep one sign convention for every metric:
    BWT and FWT are means of gains (negative BWT: earlier tasks were forgotten), forgetting a mean of losses
    (positive: forgotten)."""

    name: str
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    format: str  # e.g. ".2f"
    higher_is_better: bool
    label: str  # for axes: the name with its unit
    min_size: int = 1  # the smallest image side it scores (a window's size)
    load: Callable[[str | None], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None  # for weights
    per_image: bool = True  # False: a set metric, one value from a task's whole test split (set_scores)
    min_images: int = 1  # the fewest test images a task may have for it (a set metric's statistics)

    @property
    def needs_weights(self) -> bool:
        """Whether scoring needs pretrained weights (``load``) rather than a plain ``function``."""
        return self.load is not None

    def scorer(self, weights_dir: str | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The per-image function: ``function``, or what ``load(weights_dir)`` returns (loaded once, then kept)."""
        return _loaded(self, weights_dir) if self.load is not None else self.function

    @property
    def title(self) -> str:
        """The name as tables head it ("PSNR")."""
        return self.name.upper()

    def fmt(self, v: float) -> str:
        """``v`` in this metric's format."""
        return format(float(v), self.format)

    def gain(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old`` (negative: worse)."""
        return new - old if self.higher_is_better else old - new

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def best(self, values: Iterable, key: Callable | None = None):
        """The best of ``values`` (by ``key`` of each, if given)."""
        pick = max if self.higher_is_better else min
        return pick(values, key=key) if key is not None else pick(values)


def _distance(name: str, **kwargs: Any) -> Callable[[str | None], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The loader of a perceptual distance of ``assocgan.deepmetrics`` (``LPIPS`` or ``DISTS``): the network with the
    weights of ``weights_dir`` (a one-line error naming the files where they are missing), applied in float32 to the
    outputs and targets as the evaluation convention prepared them (a single channel, ``--eval-space y``, is
    repeated to the three the networks take)."""

    def load(weights_dir: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        from .deepmetrics import distances

        net = getattr(distances, name)(weights_dir=weights_dir, **kwargs).eval()

        def score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if pred.shape[1] == 1:
                pred, target = pred.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
            with torch.no_grad():
                return net(pred.float(), target.float())

        return score

    return load


def _set_measure(name: str) -> Callable[[str | None], Callable]:
    """The loader of a set metric of ``assocgan.deepmetrics.sets`` (``fid``, ``kid``): pytorch-fid's InceptionV3 from
    ``weights_dir`` (a one-line error naming the file where it is missing), one network shared by both."""

    def load(weights_dir: str | None) -> Callable:
        from .deepmetrics.sets import load_set_measure

        return load_set_measure(name, weights_dir)

    return load


METRICS: dict[str, Metric] = {
    "psnr": Metric("psnr", psnr, ".2f", True, "PSNR (dB)"),
    "ssim": Metric("ssim", ssim, ".3f", True, "SSIM", min_size=SSIM_WINDOW),
    # perceptual distances from pretrained networks the user keeps (docs/metrics.md): lower is better
    "lpips-alex": Metric("lpips-alex", None, ".4f", False, "LPIPS (AlexNet)", load=_distance("LPIPS", net="alex")),
    "lpips-vgg": Metric("lpips-vgg", None, ".4f", False, "LPIPS (VGG)", load=_distance("LPIPS", net="vgg")),
    "dists": Metric("dists", None, ".4f", False, "DISTS", load=_distance("DISTS")),
    # set metrics: one value per task from InceptionV3 features of all its test outputs and targets (docs/metrics.md)
    "fid": Metric("fid", None, ".2f", False, "FID", load=_set_measure("fid"), per_image=False, min_images=2),
    "kid": Metric("kid", None, ".4f", False, "KID", load=_set_measure("kid"), per_image=False, min_images=2),
}

DEFAULT_METRIC = "psnr"  # the accuracy matrix's metric where neither the benchmark nor --metric names one
DEFAULT_METRICS = ("psnr", "ssim")  # the metrics a run scores by default (--metrics), and those of a run that predates it


@functools.lru_cache(maxsize=16)
def _loaded(metric: Metric, weights_dir: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``metric.load(weights_dir)``, once per metric and directory in a process."""
    try:
        return metric.load(weights_dir)
    except FileNotFoundError as e:
        where = f"--weights-dir {weights_dir}" if weights_dir else "no --weights-dir given"
        raise UserError(f"--metrics {metric.name}: its weights {e.filename or e} are missing ({where})") from None


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; a UserError naming it and the choices otherwise."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise UserError(f"metric {name!r}: unknown; choose {' or '.join(METRICS)}") from None


def parse_metrics(text: str | Iterable[str]) -> tuple[str, ...]:
    """The metric names of ``--metrics`` (comma-separated, or a list), in order, each once; a UserError naming an
    unknown one and the choices."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n).strip() for n in text]
    names = [n for n in names if n]
    if not names:
        raise UserError(f"--metrics {text!r}: name at least one metric; choose from {', '.join(METRICS)}")
    for n in names:
        if n not in METRICS:
            raise UserError(f"--metrics: unknown metric {n!r}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def with_headline(names: Iterable[str], headline: str | None) -> tuple[str, ...]:
    """The metrics a run scores: ``names`` with the headline metric (the benchmark's or --metric's), put first
    when ``names`` leaves it out: the accuracy matrix and its summaries are always among the scores."""
    names = tuple(names)
    return names if headline is None or headline in names else (headline, *names)


def load_metrics(names: Iterable[str], weights_dir: str | None = None) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The function of each metric of ``names`` (per image, or of two sets for a set metric), the weights of those
    that need them loaded now: a run calls it before training, so that a missing file fails in one line (a
    UserError naming it) before any step."""
    return {n: get_metric(n).scorer(weights_dir) for n in names}


def per_image_metric(preferred: str, names: Iterable[str]) -> str | None:
    """The metric to label single images with: ``preferred`` (the headline) when it scores images one by one, else
    the first of ``names`` that does, else None (a run that scores set metrics only)."""
    return next((n for n in (preferred, *names) if get_metric(n).per_image), None)


def set_metric_warnings(names: Iterable[str], n_test: int) -> list[str]:
    """What a run scoring ``names`` on tasks of ``n_test`` test images (the smallest task's) should be told before
    training: a UserError when a set metric cannot be computed on so few, a warning line when FID is unreliable."""
    from .deepmetrics.fid import fid_warning

    names = tuple(names)
    for n in names:
        m = get_metric(n)
        if n_test < m.min_images:
            raise UserError(f"--metrics {n}: scores a task's test images as a set and needs at least {m.min_images}; the tasks have {n_test} (raise --n-test)")
    out = []
    if "fid" in names:
        w = fid_warning(n_test, 2048)
        if w is not None:
            out.append(f"--metrics fid: the tasks have {n_test} test images: {w}{'' if 'kid' in names else ' (--metrics kid)'}")
    return out


SPACES = ("rgb", "y")


def to_y(images: torch.Tensor) -> torch.Tensor:
    """The Y (luma) of ITU-R BT.601 YCbCr as BasicSR computes it, (N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W):
    Y = 16 + 65.481 R + 128.553 G + 24.966 B in [0, 255] units, returned divided by 255 (not rounded)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"the Y channel needs (N,3,H,W) RGB images, got {tuple(images.shape)}")
    w = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64, device=images.device)
    return ((images.double() * w[None, :, None, None]).sum(1, keepdim=True) + 16.0) / 255.0


@dataclass(frozen=True)
class Convention:
    """How an output is scored against its target: rounded to uint8 first (``quantize``, the convention of
    restoration papers: outputs are saved as 8-bit images), on RGB or on the Y channel (``space``), with
    ``crop_border`` pixels cut off each side; in each metric of ``metrics`` (those that need weights find them in
    ``weights_dir``)."""

    quantize: bool = True
    space: str = "rgb"
    crop_border: int = 0
    metrics: tuple[str, ...] = DEFAULT_METRICS
    weights_dir: str | None = None

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ([0, 1], (N, C, H, W)) as the metric sees them under this convention."""
        out = images.double()
        if self.quantize:
            out = (out.clamp(0, 1) * 255).round() / 255
        if self.crop_border:
            b = self.crop_border
            out = out[..., b:-b, b:-b]
        return to_y(out) if self.space == "y" else out

    def describe(self) -> str:
        """In words, for tables: e.g. "on Y, uint8, border 4"."""
        return f"on {'Y' if self.space == 'y' else 'RGB'}, {'uint8' if self.quantize else 'float'}, border {self.crop_border}"


DEFAULT_CONVENTION = Convention()  # 8-bit outputs, RGB, no border


def scores(pred: torch.Tensor, target: torch.Tensor, convention: Convention = DEFAULT_CONVENTION) -> dict[str, torch.Tensor]:
    """Each per-image metric of ``convention.metrics`` of each image of ``pred`` against ``target`` (both [0, 1])
    under ``convention``: the outputs are prepared once and every metric scores them. Set metrics (FID, KID) have
    no value per image and are left out: ``set_scores`` computes them."""
    _check(pred, target)
    names = [n for n in convention.metrics if get_metric(n).per_image]
    if not names:
        return {}
    p, t = convention.prepare(pred), convention.prepare(target)
    return {name: fn(p, t) for name, fn in load_metrics(names, convention.weights_dir).items()}


def set_scores(
    pred: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor | Sequence[torch.Tensor],
    convention: Convention = DEFAULT_CONVENTION,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Each set metric of ``convention.metrics`` of the set ``pred`` against the set ``target`` (both [0, 1]; a batch
    (N, C, H, W), or a list of batches whose sizes may differ, ``--eval-full``), each image prepared under
    ``convention``: one float per metric (FID, KID: lower is better). The targets' features are cached (a task's
    targets do not change); the networks run on ``device`` (default: the CPU)."""
    names = [n for n in convention.metrics if not get_metric(n).per_image]
    if not names:
        return {}
    batches = lambda s: [s] if isinstance(s, torch.Tensor) else list(s)
    p = [convention.prepare(b) for b in batches(pred)]
    t = [convention.prepare(b) for b in batches(target)]
    out, feats = {}, {}
    for name, measure in load_metrics(names, convention.weights_dir).items():
        f = measure.features  # FID and KID share one network: the outputs go through it once for both
        if id(f) not in feats:
            feats[id(f)] = (f(p, device), f(t, device, cache=True))
        out[name] = float(measure.distance(*feats[id(f)]))
    return out


def noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """The standard deviation of white Gaussian noise in each image, estimated from the image alone
    (Immerkær 1996, "Fast noise variance estimation": the mean absolute response of a Laplacian-difference
    mask that cancels smooth structure), averaged over channels in variance; one value per (N, C, H, W) image."""
    if images.dim() != 4 or min(images.shape[-2:]) < 3:
        raise ValueError(f"expected (N,C,H,W) images of at least 3x3 pixels, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    mask = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], dtype=torch.float64)
    resp = F.conv2d(images.double().reshape(n * c, 1, h, w), mask[None, None]).abs()
    sigma = resp.flatten(1).mean(1) * (torch.pi / 2) ** 0.5 / 6
    return sigma.reshape(n, c).pow(2).mean(1).sqrt().float()
