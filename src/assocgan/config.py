"""The run configuration and its presets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .metrics import DEFAULT_METRICS, SPACES, Convention, get_metric, parse_metrics, with_headline
from .nets import ARCHS
from .options import SWITCH_OFF, SWITCH_ON, Option

# the command line's groups of run settings (a setting without a group is no flag: it is read from --config only)
RUN, TRAINING, EVALUATION = "what to run", "sizes and training", "evaluation"
AMP_MODES = ("bf16", "fp16", "off")
MAX_THREADS = 1024
MAX_SEED = 2**32 - 1  # numpy's and torch's generators both take it
MAX_STEPS = 10**7  # steps per task: 500 times the paper's 20,000
MAX_SIZE = 8192


def setting(default: Any, help: str, group: str | None = TRAINING, **spec: Any) -> Any:
    """A run setting declared once: its default, its help, its group on the command line, and what it takes
    (``Option``'s choices and bounds). The flag, its --help, the configuration's override and its check are all
    made from this declaration."""
    return field(default=default, metadata={"option": Option("", default, help, **spec), "group": group})


@dataclass
class RunConfig:
    # what to run
    benchmark: str = "restore4"
    methods: list[str] = field(default_factory=lambda: ["tl", "jl"])
    seed: int = setting(0, "the random seed of data, initialisation and every draw", RUN, low=0, high=MAX_SEED)
    # data
    size: int = setting(64, "image size, a multiple of 16", low=16, high=MAX_SIZE)
    n_train: int = setting(512, "training images per task", low=1)
    n_test: int = setting(32, "test images per task", low=1)
    order: str | None = setting(None, "task order: names or 1-based positions, comma-separated", RUN, kind=str, meta="ORDER")
    fresh_degradations: bool = setting(
        False,
        "draw each training source anew from its degradation at every step (default: fixed pairs, one degraded copy per clean crop, made once from the seed)",
        RUN,
        bare=True,
    )
    # networks
    arch: str = setting("pix2pix", "generator architecture: " + "; ".join(f"{a.name}: {a.help}" for a in ARCHS.values()), choices=tuple(ARCHS))
    ngf: int = setting(32, "generator width", low=1)
    ndf: int = setting(32, "discriminator width", low=1)
    norm: str = setting("instance", "normalisation layers", choices=("instance", "batch", "none"))
    residual: bool = setting(True, "the generator adds its output to its input", None)
    context: bool = setting(False, "the pix2pix U-Net's decoder modulated by the input's global statistics (--arch gated has its gate instead)")
    # optimisation
    steps: int = setting(600, "training steps per task", low=1, high=MAX_STEPS)
    batch_size: int = setting(8, "pairs a step", low=1)
    lr: float = setting(2e-4, "Adam learning rate", low=0.0, open_low=True)
    beta1: float = setting(0.5, "Adam beta1", low=0.0, high=1.0, open_high=True)
    beta2: float = setting(0.999, "Adam beta2", None, low=0.0, high=1.0, open_high=True)
    lr_schedule: str = setting("constant", "learning rate over each task: constant, or cosine decay to a tenth", choices=("constant", "cosine"))
    lambda_content: float = setting(1.0, "content (MSE) weight", low=0.0)
    lambda_adv: float = setting(1e-3, "adversarial weight (0 turns the discriminator off)", low=0.0)
    gan_mode: str = setting("lsgan", "the adversarial loss", choices=("lsgan", "vanilla"))
    amp: str = setting("bf16", "autocast for training: bf16, fp16 (CUDA, with a gradient scaler) or off; on means bf16", choices=AMP_MODES)
    threads: int = setting(0, "CPU threads (0: all)", low=0, high=MAX_THREADS, note=" (all cores)")
    # evaluation (metrics.Convention): outputs rounded to uint8, RGB or the Y of YCbCr, a border cut off
    eval_quantize: bool = setting(True, "round outputs to 8-bit values before the metric, as saved images are", EVALUATION)
    eval_space: str = setting("rgb", "score RGB, or the Y (luma) of BT.601 YCbCr as BasicSR does", EVALUATION, choices=SPACES)
    crop_border: int = setting(0, "pixels cut off each side of output and target before the metric", EVALUATION, low=0)
    eval_full: bool = setting(
        False,
        "with --data or --clean-images: score each test image at its own size, translated in blended tiles of "
        "--size (default: centre crops resized to --size, as training sees them)",
        EVALUATION,
        bare=True,
    )
    metrics: str = setting(
        ",".join(DEFAULT_METRICS),
        "the metrics scored on every task, comma-separated (the headline --metric, the benchmark's, is always scored: added first if left out)",
        EVALUATION,
        meta="LIST",
    )
    router: bool = setting(
        False,
        "a method told the task identity at test (single, piggyback-ti, lora) also trains a task router without old data "
        "(a classifier of the task, from its own mappers' samples of the past tasks) and is scored a second time answered through it, "
        "without the task identity (results.json's routed matrix and router_accuracy)",
        EVALUATION,
    )
    weights_dir: str | None = setting(None, "where the pretrained weights of metrics that need them are looked for", EVALUATION, kind=str, meta="DIR")
    # outputs
    sample_images: int = setting(6, "test images in each sample grid", None, low=1)
    eval_every: int = setting(0, "evaluate every K steps for forgetting curves (0: only after each task)", low=0, meta="K")
    checkpoint_every: int = setting(100, "save the full training state every K steps, to resume a killed run from (0: after each task only)", low=0, meta="K")
    # per-method options, {method: {option: value}}
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.amp = amp_mode(self.amp)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # settings that may differ between methods written to one run folder
    PER_METHOD = ("methods", "method_options", "threads", "eval_every", "sample_images", "checkpoint_every", "weights_dir", "router")

    def scored_metrics(self, headline: str | None = None) -> tuple[str, ...]:
        """The metrics a run scores: ``--metrics`` with the ``headline`` metric (the benchmark's) added first if
        left out; a UserError if the test images are too small for one of them."""
        names = with_headline(parse_metrics(self.metrics), headline)
        check_size(self, names)
        return names

    def convention(self, headline: str | None = None) -> Convention:
        """How outputs are scored (the one evaluation path applies it), in ``scored_metrics(headline)``."""
        return convention_of(self.to_dict(), headline)

    def shared_settings(self) -> dict[str, Any]:
        """The settings every method of one run folder must share (data, networks, optimisation, seed)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.PER_METHOD}


DEFAULT_PRESET = "quick"
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: for tests
    "smoke": dict(size=32, ngf=8, ndf=8, steps=12, batch_size=4, n_train=16, n_test=4, sample_images=2, amp="off", threads=1),
    # the default, the benchmark preset: competent models in minutes a method on a 2-core CPU (docs/results.md
    # has the runs that chose it: Adam 2e-3 with beta1 0.9 and a cosine decay per task; the adversarial term
    # at 1e-3 changed no score and doubled the time, so it is off; the pix2pix U-Net with its global context: the gated
    # U-Net learns mixed4's tasks jointly from scratch far better, but in the continual protocol JL and Assoc-GAN end
    # lower with it on mixed4 and restore4, "Joint learning of local and global tasks")
    "quick": dict(
        size=64, ngf=32, ndf=32, steps=600, batch_size=8, n_train=512, n_test=32, lr=2e-3, beta1=0.9, lr_schedule="cosine", lambda_adv=0.0, context=True
    ),
    # the paper's protocol at the quick preset's size, for a CPU: the adversarial term on (1e-3: the paper sets its
    # weight by cross-validation and gives no value; 1e-3 is SRGAN's), Assoc-GAN's association samples made from the
    # current targets (eq. 3) and its continual distillation on; every GAN baseline's discriminator-side mechanism acts
    "paper-quick": dict(
        size=64,
        ngf=32,
        ndf=32,
        steps=600,
        batch_size=8,
        n_train=512,
        n_test=32,
        lr=2e-3,
        beta1=0.9,
        lr_schedule="cosine",
        lambda_adv=1e-3,
        context=True,
        method_options={"assoc": {"assoc_target": "current", "distill": True}},
    ),
    # the paper's scale, for a GPU
    "paper": dict(size=224, ngf=64, ndf=64, steps=20000, batch_size=16, n_train=2000, n_test=100, sample_images=8),
}


def _settings() -> dict[str, Option]:
    """Every run setting declared with ``setting``, by field name, its ``Option`` named."""
    return {f.name: dataclasses.replace(f.metadata["option"], name=f.name) for f in dataclasses.fields(RunConfig) if "option" in f.metadata}


# the run settings (RunConfig's declared fields) and the command-line group of each (None: no flag)
SETTINGS: dict[str, Option] = _settings()
GROUPS: dict[str, str | None] = {f.name: f.metadata["group"] for f in dataclasses.fields(RunConfig) if "option" in f.metadata}


def by_preset(name: str, active: str | None = None) -> str:
    """`` (now 0.002 with --preset quick; smoke 0.001, ...)``: a run setting's value in each preset for its --help, the
    active preset's (the one given, else the default) first."""
    option = SETTINGS[name]
    active = active if active in PRESETS else DEFAULT_PRESET
    value = lambda p: option.shown(PRESETS[p].get(name, option.default))
    return f" (now {value(active)} with --preset {active}; " + ", ".join(f"{p} {value(p)}" for p in PRESETS) + ")"


def make_config(preset: str | None = None, base: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """The preset's settings (or ``base``, a saved configuration, instead) with ``overrides`` that are not None.
    An override may be given as the command line spells it (``"on"``, ``"0.01"``): each setting reads its own."""
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset] if base is None else base)
    values.update({k: SETTINGS[k].read(v) if k in SETTINGS else v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"unknown configuration key(s): {', '.join(sorted(unknown))}")
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


def amp_mode(value: Any) -> Any:
    """``--amp``'s value as the configuration keeps it: a configuration saved when it was a switch (true: bf16
    autocast, false: none) means bf16 or off; on and off (and the other switch spellings) mean bf16 and off."""
    if isinstance(value, bool):
        return "bf16" if value else "off"
    if isinstance(value, str):
        v = value.lower()
        return "bf16" if v in SWITCH_ON else "off" if v in SWITCH_OFF else v
    return value


# what a saved configuration that predates a setting meant by it: a run before --metrics scored psnr and ssim
SAVED_BEFORE = {"metrics": ",".join(DEFAULT_METRICS)}


def upgrade_saved(config: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration (results.json's, a training state's) in the current spelling of its settings, with
    the settings added since filled with what it meant (``SAVED_BEFORE``), so that a run killed before an upgrade
    resumes after it."""
    out = {**SAVED_BEFORE, **config} if config else {}
    if "amp" in out:
        out["amp"] = amp_mode(out["amp"])
    return out


# the evaluation of a run whose configuration predates these settings: float outputs, RGB, no border
# and in PSNR and SSIM
EVAL_BEFORE = {"eval_quantize": False, "eval_space": "rgb", "crop_border": 0, "metrics": ",".join(DEFAULT_METRICS)}


def convention_of(config: dict[str, Any], headline: str | None = None) -> Convention:
    """The evaluation convention of a configuration as results.json stores it, scoring its metrics and ``headline``."""
    get = lambda k: config.get(k, EVAL_BEFORE[k])
    return Convention(
        quantize=bool(get("eval_quantize")),
        space=get("eval_space"),
        crop_border=int(get("crop_border")),
        metrics=with_headline(parse_metrics(get("metrics")), headline),
        weights_dir=config.get("weights_dir"),
    )


def check_size(cfg: RunConfig, names: tuple[str, ...]) -> None:
    """A UserError unless the test images, cropped, are large enough for every metric of ``names``."""
    needs = max((get_metric(n) for n in names), key=lambda m: m.min_size)
    if cfg.size - 2 * cfg.crop_border < needs.min_size:
        raise UserError(f"--crop-border {cfg.crop_border}: must leave at least {needs.min_size} px of the {cfg.size} px test images (the {needs.title} window)")


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def validate(cfg: RunConfig) -> None:
    """Every setting's own check (its declaration's choices and bounds), then those between settings and the
    machine; a UserError naming the flag and what is wrong."""
    for name, option in SETTINGS.items():
        option.check(getattr(cfg, name))
    if cfg.size % 16:
        raise UserError(f"--size {cfg.size}: must be a positive multiple of 16")
    check_size(cfg, parse_metrics(cfg.metrics))  # the run adds the benchmark's metric if left out: checked again then
    total = machine_memory()
    pairs = (cfg.n_train + cfg.n_test) * 2 * 3 * cfg.size**2  # one task's pairs, uint8
    if total is not None and pairs > total // 4:
        raise UserError(
            f"--n-train {cfg.n_train}: one task's {cfg.n_train + cfg.n_test:,} pairs of {cfg.size} px would take {pairs / 2**30:.1f} GiB, "
            f"more than a quarter of this machine's {total / 2**30:.1f} GiB; give fewer (or a smaller --size)"
        )
