"""The run configuration and its presets."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .metrics import SPACES, Convention
from .nets import ARCHS
from .options import SWITCH_OFF, SWITCH_ON


@dataclass
class RunConfig:
    # what to run
    benchmark: str = "restore4"
    methods: list[str] = field(default_factory=lambda: ["tl", "jl"])
    seed: int = 0
    # data
    size: int = 64
    n_train: int = 512
    n_test: int = 32
    order: str | None = None
    fresh_degradations: bool = False  # draw degraded sources anew at every step instead of fixed pairs
    # networks
    arch: str = "pix2pix"  # the generator's architecture (nets.ARCHS)
    ngf: int = 32
    ndf: int = 32
    norm: str = "instance"
    residual: bool = True
    context: bool = False  # the generator's decoder modulated by the input's global statistics
    # optimisation
    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_schedule: str = "constant"  # per task: constant, or cosine decay to a tenth of lr
    lambda_content: float = 1.0
    lambda_adv: float = 1e-3
    gan_mode: str = "lsgan"
    amp: str = "bf16"  # autocast of the training steps: bf16, fp16 (with a gradient scaler; CUDA only) or off
    threads: int = 0  # 0: all cores
    # evaluation (metrics.Convention): outputs rounded to uint8, RGB or the Y of YCbCr, a border cut off
    eval_quantize: bool = True
    eval_space: str = "rgb"
    crop_border: int = 0
    eval_full: bool = False  # a user's test images at their own size, tiled through the generator (--data, --clean-images)
    # outputs
    sample_images: int = 6
    eval_every: int = 0
    checkpoint_every: int = 100  # save the full training state every K steps (and after each task); 0: after each task only
    # per-method options, {method: {option: value}}
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.amp = amp_mode(self.amp)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # settings that may differ between methods written to one run folder
    PER_METHOD = ("methods", "method_options", "threads", "eval_every", "sample_images", "checkpoint_every")

    def convention(self) -> Convention:
        """How outputs are scored (the one evaluation path applies it)."""
        return convention_of(self.to_dict())

    def shared_settings(self) -> dict[str, Any]:
        """The settings every method of one run folder must share (data, networks, optimisation, seed)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.PER_METHOD}


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for tests
    "smoke": dict(size=32, ngf=8, ndf=8, steps=12, batch_size=4, n_train=16, n_test=4, sample_images=2, amp="off", threads=1),
    # the default, the benchmark preset: competent models in minutes a method on a 2-core CPU (docs/results.md
    # has the runs that chose it: Adam 2e-3 with beta1 0.9 and a cosine decay per task; the adversarial term
    # at 1e-3 changed no score and doubled the time, so it is off; the pix2pix U-Net with its global context: the gated
    # U-Net learns mixed4's tasks jointly from scratch far better, but in the continual protocol JL and Assoc-GAN end
    # lower with it on mixed4 and restore4, "Joint learning of local and global tasks")
    "quick": dict(size=64, ngf=32, ndf=32, steps=600, batch_size=8, n_train=512, n_test=32, lr=2e-3, beta1=0.9, lr_schedule="cosine",
                  lambda_adv=0.0, context=True),
    # the paper's protocol at the quick preset's size, for a CPU: the adversarial term on (1e-3: the paper sets its
    # weight by cross-validation and gives no value; 1e-3 is SRGAN's), Assoc-GAN's association samples made from the
    # current targets (eq. 3) and its continual distillation on; every GAN baseline's discriminator-side mechanism acts
    "paper-quick": dict(size=64, ngf=32, ndf=32, steps=600, batch_size=8, n_train=512, n_test=32, lr=2e-3, beta1=0.9, lr_schedule="cosine",
                        lambda_adv=1e-3, context=True, method_options={"assoc": {"assoc_target": "current", "distill": True}}),
    # the paper's scale, for a GPU
    "paper": dict(size=224, ngf=64, ndf=64, steps=20000, batch_size=16, n_train=2000, n_test=100, sample_images=8),
}


def make_config(preset: str = "quick", base: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """The preset's settings (or ``base``, a saved configuration, instead) with ``overrides`` that are not None."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset] if base is None else base)
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"unknown configuration key(s): {', '.join(sorted(unknown))}")
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


AMP_MODES = ("bf16", "fp16", "off")


def amp_mode(value: Any) -> Any:
    """``--amp``'s value as the configuration keeps it: a configuration saved when it was a switch (true: bf16
    autocast, false: none) means bf16 or off; on and off (and the other switch spellings) mean bf16 and off."""
    if isinstance(value, bool):
        return "bf16" if value else "off"
    if isinstance(value, str):
        v = value.lower()
        return "bf16" if v in SWITCH_ON else "off" if v in SWITCH_OFF else v
    return value


def upgrade_saved(config: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration (results.json's, a training state's) in the current spelling of its settings."""
    return {**config, "amp": amp_mode(config["amp"])} if "amp" in config else dict(config)


# the evaluation of a run whose configuration predates these settings: float outputs, RGB, no border
EVAL_BEFORE = {"eval_quantize": False, "eval_space": "rgb", "crop_border": 0}


def convention_of(config: dict[str, Any]) -> Convention:
    """The evaluation convention of a configuration as results.json stores it."""
    get = lambda k: config.get(k, EVAL_BEFORE[k])  # noqa: E731
    return Convention(quantize=bool(get("eval_quantize")), space=get("eval_space"), crop_border=int(get("crop_border")))


MAX_THREADS = 1024
SSIM_WINDOW = 11
MAX_SEED = 2**32 - 1  # numpy's and torch's generators both take it
MAX_STEPS = 10**7  # steps per task: 500 times the paper's 20,000
MAX_SIZE = 8192


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def validate(cfg: RunConfig) -> None:
    for f in dataclasses.fields(RunConfig):  # NaN and infinity pass no comparison below, but say so plainly
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"--{f.name.replace('_', '-')} {v}: must be a finite number")
    checks = [
        (cfg.size % 16 == 0 and cfg.size >= 16, "--size", "must be a positive multiple of 16"),
        (cfg.size <= MAX_SIZE, "--size", f"must be at most {MAX_SIZE} (train on crops; translate whole images with --mode tile)"),
        (1 <= cfg.steps <= MAX_STEPS, "--steps", f"must be 1 to {MAX_STEPS:,}"),
        (0 <= cfg.seed <= MAX_SEED, "--seed", f"must be 0 to {MAX_SEED}"),
        (cfg.batch_size >= 1, "--batch-size", "must be at least 1"),
        (cfg.ngf >= 1 and cfg.ndf >= 1, "--ngf/--ndf", "must be at least 1"),
        (cfg.lr > 0, "--lr", "must be positive"),
        (cfg.lr_schedule in ("constant", "cosine"), "--lr-schedule", "choose constant or cosine"),
        (0 <= cfg.beta1 < 1, "--beta1", "must be in [0, 1)"),
        (0 <= cfg.beta2 < 1, "beta2", "must be in [0, 1)"),
        (cfg.lambda_adv >= 0 and cfg.lambda_content >= 0, "--lambda-adv/--lambda-content", "must not be negative"),
        (cfg.gan_mode in ("lsgan", "vanilla"), "--gan-mode", "choose lsgan or vanilla"),
        (cfg.amp in AMP_MODES, "--amp", "choose bf16, fp16 or off"),
        (cfg.norm in ("instance", "batch", "none"), "--norm", "choose instance, batch or none"),
        (cfg.arch in ARCHS, "--arch", f"choose {' or '.join(ARCHS)}"),
        (cfg.n_train >= 1 and cfg.n_test >= 1, "--n-train/--n-test", "must be at least 1"),
        (cfg.eval_every >= 0, "--eval-every", "must not be negative"),
        (cfg.checkpoint_every >= 0, "--checkpoint-every", "must not be negative"),
        (0 <= cfg.threads <= MAX_THREADS, "--threads", f"must be 0 (all cores) to {MAX_THREADS}"),
        (cfg.sample_images >= 1, "sample_images", "must be at least 1"),
        (cfg.eval_space in SPACES, "--eval-space", f"choose {' or '.join(SPACES)}"),
        (isinstance(cfg.crop_border, int) and cfg.crop_border >= 0, "--crop-border", "must be a whole number, 0 or more"),
        (cfg.size - 2 * cfg.crop_border >= SSIM_WINDOW, "--crop-border",
         f"must leave at least {SSIM_WINDOW} px of the {cfg.size} px test images (the SSIM window)"),
    ]
    for ok, option, msg in checks:
        if not ok:
            value = getattr(cfg, option.lstrip("-").split("/")[0].replace("-", "_"), None)
            raise UserError(f"{option}" + (f" {value}" if value is not None and "/" not in option else "") + f": {msg}")
    total = machine_memory()
    pairs = (cfg.n_train + cfg.n_test) * 2 * 3 * cfg.size**2  # one task's pairs, uint8
    if total is not None and pairs > total // 4:
        raise UserError(f"--n-train {cfg.n_train}: one task's {cfg.n_train + cfg.n_test:,} pairs of {cfg.size} px would take {pairs / 2**30:.1f} GiB, "
                        f"more than a quarter of this machine's {total / 2**30:.1f} GiB; give fewer (or a smaller --size)")
