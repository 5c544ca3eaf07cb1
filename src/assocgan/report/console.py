"""Terminal output: progress bars while training, then the tables."""

from __future__ import annotations

from ..metrics import get_metric
from .tables import run_tables, to_rich, to_text


class Progress:
    """A rich progress bar over every step of every method; a no-op without a console."""

    def __init__(self, console, total: int):
        self.console = console
        self.total = total
        self._progress = None
        self._bar = None

    def __enter__(self):
        if self.console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
            self._bar = self._progress.add_task("training", total=self.total)
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_method(self, name: str) -> None:
        if self._progress is not None:
            self._progress.update(self._bar, description=f"training {name}")

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._bar, n)

    def task_done(self, name: str, rec, bench) -> None:
        if self._progress is not None:
            metric = bench.metric
            scores = " ".join(get_metric(metric).fmt(s[metric]) for s in rec.scores)
            self._progress.console.print(
                f"  {name}: task {rec.t + 1}/{len(bench.tasks)} {bench.tasks[rec.t].name} done in {rec.train_seconds:.0f}s; {metric}: {scores}"
            )


def print_tables(results: dict, console=None) -> None:
    for t in run_tables(results):
        if console is None:
            print(to_text(t) + "\n")
        else:
            console.print(to_rich(t, console.width))
