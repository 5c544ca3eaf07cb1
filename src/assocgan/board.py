"""TensorBoard streams of a run: one a method, ``OUT/tb/<method>/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import RunConfig
from .data.benchmarks import Benchmark
from .results import BWT, FINAL_AVG, FORGETTING, FWT, MEMORY_BYTES, TRAIN_SECONDS

TENSORBOARD_MISSING = "the tensorboard package is not installed (pip install 'assocgan[tensorboard]')"


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


def hparam_value(v):
    """``v`` as TensorBoard's hparams take it (a number, a string or a truth value; anything else as its JSON)."""
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v)


class TensorBoard:
    """One method's event stream, ``DIR/tb/<method>/`` (a run in TensorBoard, so that the methods overlay under
    one tag): training losses (``loss/<term>``), the evaluation curve (``--eval-every`` points and the end of each
    task, per task: ``<metric>/<task>``), sample grids (``samples``), the
    configuration as text and the hyperparameters with the final figures (TensorBoard's HPARAMS tab). A method
    trained from the start gets a fresh stream; a resumed one purges what the killed run logged after its saved
    state (``purge_step``), so a rerun adds no duplicate points. Nothing is written without a writer
    (tensorboard not installed, or turned off)."""

    def __init__(self, folder: Path, name: str, resume_step: int | None = None, enabled: bool = True):
        import shutil

        self.name = name
        self.writer = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is None:
            shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def eval_scores(self, bench: Benchmark, scores: list[dict[str, float]], step: int) -> None:
        """Each task's scores at ``step``, an ``--eval-every`` point, under the tags the training loop gives the
        scores at each task's end (``<metric>/<task>``): one curve a task."""
        for j, sc in enumerate(scores):
            for m, v in sc.items():
                self.scalar(f"{m}/{bench.tasks[j].name}", v, step)

    def start(self, cfg: RunConfig, options: dict[str, Any], metric: str) -> None:
        """The configuration as text and the hyperparameters, with the final figures as their metrics."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_text("config", "```\n" + json.dumps({**cfg.to_dict(), "method": self.name, "options": options}, indent=2) + "\n```", 0)
        hp = {k: hparam_value(v) for k, v in cfg.shared_settings().items() if v is not None}
        hp.update({"method": self.name, **{f"{self.name}.{k}": hparam_value(v) for k, v in options.items() if v is not None}})
        metrics = {f"final/{k}": 0.0 for k in FINAL_FIGURES}
        for summary in hparams(hp, metrics):
            self.writer.file_writer.add_summary(summary)

    def end(self, entry: dict[str, Any], step: int) -> None:
        for k in FINAL_FIGURES:
            if entry.get(k) is not None:
                self.scalar(f"final/{k}", entry[k], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


FINAL_FIGURES = (FINAL_AVG, BWT, FWT, FORGETTING, MEMORY_BYTES, TRAIN_SECONDS)
