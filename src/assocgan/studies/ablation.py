"""``ablation``: the paper's Table 3, each module of Assoc-GAN switched on in turn, from TL without content loss to
the full Assoc-GAN: a run a row."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..metrics import get_metric
from ..report.plots import METHOD_COLORS, is_number, metric_name, new_figure
from ..report.tables import Table, fmt_pm, spread_of, study_seeds_note
from ..results import BWT, COMPLETE, FINAL_AVG, SCORED, SD, scored_metrics
from ..seeds import mean
from .base import Plot, RunSpec, StudyKind, below_doing_nothing, safe_name, variant

# the paper's Table 3: (row label, method, loss terms, method options). Each row carries the terms its label
# names: "Backbone" is the generator trained by the adversarial loss alone (the paper's text: no content loss),
# "+Lmse" adds the content loss, "+Ladv" the adversarial term at the run's weight (``ADVERSARIAL_WEIGHT`` where the
# preset has none, as the quick preset does), "+Lfeature" the continual distillation, "+Heuristics" the
# association samples.
ABLATION_ROWS: tuple[tuple[str, str, tuple[str, ...], dict], ...] = (
    ("Backbone", "tl", ("adv",), {}),
    ("Backbone+Lmse", "tl", ("mse",), {}),
    ("Backbone+Lmse+Ladv", "tl", ("mse", "adv"), {}),
    ("Backbone+Lmse+Ladv+Lfeature", "assoc", ("mse", "adv"), {"heuristics": False, "distill": True}),
    ("Backbone+Lmse+Ladv+Heuristics", "assoc", ("mse", "adv"), {"distill": False}),
    ("Backbone+Lmse+Ladv+Heuristics+Lfeature", "assoc", ("mse", "adv"), {"distill": True}),
)
ADVERSARIAL_WEIGHT = 1e-3  # the adversarial term's weight of the rows that name it, when the run's is 0


def ablation_runs(base: RunConfig, rows=ABLATION_ROWS) -> list[RunSpec]:
    out = []
    adv = base.lambda_adv or ADVERSARIAL_WEIGHT
    content = base.lambda_content or 1.0
    for k, (label, method, terms, options) in enumerate(rows, 1):
        weights = {"lambda_content": content if "mse" in terms else 0.0, "lambda_adv": adv if "adv" in terms else 0.0}
        cfg = variant(base, [method], {method: options}, **weights)
        flags = "".join(f" {'--' + n.replace('_', '-')} {v:g}" for n, v in weights.items())
        opts = "".join(f" --{n.replace('_', '-')} {'on' if v is True else 'off' if v is False else v}" for n, v in options.items())
        out.append(RunSpec(f"{k}_{safe_name(label.lower().replace('+', '_'))}", label, cfg, how=f"{method}{flags}{opts}", meta={"method": method, "row": k}))
    return out


def ablation_table(summary: dict) -> Table:
    """The paper's Table 3: the final average in every metric of each module configuration."""
    scored = scored_metrics(summary)
    rows = []
    for r in summary["rows"]:
        own = spread_of(r, FINAL_AVG)  # the sd over seeds of the benchmark's own metric's final average
        rows.append(
            [r["label"] + ("" if r.get(COMPLETE) else " (partial)")]
            + [fmt_pm(r.get(m), own if summary["metric"] == m else None, m) for m in scored]
            + [fmt_pm(r.get(BWT), spread_of(r, BWT), summary["metric"], signed=True), r.get("below", ""), r.get("how", "")]
        )
    titles = [get_metric(m).title for m in scored]
    return Table(
        f"Ablation: results of each module on {summary['n_tasks']} tasks ({summary['benchmark']})",
        ["Module", *titles, "BWT", "below input", "as run"],
        rows,
        note=f"{' and '.join(titles)}: mean over all tasks after the last task (the paper's Table 3); BWT in the benchmark's metric. "
        "below input: the tasks on which the row ends below doing nothing in the benchmark's metric (over the seeds' mean)." + study_seeds_note(summary),
    )


def ablation_figure(summary: dict):
    """Table 3 as bars: the final average in every metric of each configuration, a panel per metric."""
    rows = summary["rows"]
    scored = scored_metrics(summary)
    fig = new_figure(4.5 * len(scored), 1.0 + 0.45 * max(2, len(rows)))
    axes = fig.subplots(1, len(scored), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, scored):
        for k, r in enumerate(rows):
            v = r.get(metric)
            if is_number(v):
                ax.barh(k, v, color=METHOD_COLORS[k % len(METHOD_COLORS)])
                ax.text(v, k, f" {get_metric(metric).fmt(v)}", va="center", fontsize=8)
        ax.set_xlabel(f"final average {metric_name(metric)}")
        ax.margins(x=0.18)
        ax.grid(alpha=0.25, axis="x")
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels([r["label"] for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"Ablation: {summary['benchmark']}", fontsize=11)
    return fig


class AblationStudy(StudyKind):
    name = "ablation"
    help = "the paper's Table 3: backbone, +MSE, +adversarial, +distillation, +heuristics, full Assoc-GAN"
    description = (
        "Each module of Assoc-GAN switched on in turn (the paper's Table 3): backbone without content loss, + MSE, + adversarial loss, "
        "+ feature distillation, + heuristics, and all."
    )
    plots = (Plot("ablation", "Ablation (paper Table 3): final average of each configuration.", ablation_figure),)

    def base_methods(self, args) -> str:
        return "tl,assoc"

    def runs(self, base: RunConfig, names: list[str], rows=ABLATION_ROWS) -> tuple[list[RunSpec], dict[str, Any]]:
        return ablation_runs(base, rows), {"rows": [r[0] for r in rows]}

    def collect(self, study: dict, found: dict, tasks: list[str]) -> dict[str, Any]:
        rows = []
        scored = next((scored_metrics(res) for res, _ in found.values() if res), None) or scored_metrics({})
        for spec in study["runs"]:
            res, e = found[spec["name"]]
            complete = bool(e and e.get(COMPLETE))
            rows.append(
                {
                    "label": spec["label"],
                    "how": spec.get("how", ""),
                    COMPLETE: complete,
                    **{m: mean(e[m][-1]) if complete and e.get(m) else None for m in scored},
                    BWT: e.get(BWT) if complete else None,
                    SD: e.get(SD) if complete else None,
                    "below": below_doing_nothing(res, e),
                }
            )
        return {"rows": rows, SCORED: scored}

    def tables(self, summary: dict) -> list[Table]:
        return [ablation_table(summary)]
