"""Tables: a ``Table`` is built once from results and rendered as text, Markdown, LaTeX or HTML. A run's tables are
made here, with the formatting helpers every table is made with; a study kind's own tables are in its file of
``assocgan.studies``."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from ..config import convention_of
from ..metrics import DEFAULT_METRIC, get_metric
from ..results import (
    AVG,
    BENCHMARK,
    BWT,
    COMPLETE,
    CONFIG,
    FAILED,
    FINAL_AVG,
    FORGETTING,
    FORGETTING_LAST,
    FWT,
    IDENTITY,
    IDENTITY_SD,
    INTRANSIGENCE,
    MATRIX,
    MEMORY_BYTES,
    METHODS,
    METRIC,
    PER_SEED,
    PLASTICITY_GAP,
    ROUTED,
    ROUTER_ACCURACY,
    SD,
    SEEDS,
    STABILITY_GAP,
    TASK_DESCRIPTIONS,
    TASK_ID_AT_TEST,
    TASKS,
    TITLE,
    TRAIN_CPU_SECONDS,
    TRAIN_SECONDS,
    scored_metrics,
)

ORDINALS = ["One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    rules_before: set[int] = field(default_factory=set)  # row indices that start a new block
    short_labels: list[str] = field(default_factory=list)  # row labels for the terminal (to_rich), where the first column's are long


def fmt_metric(v, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return get_metric(metric).fmt(v)


def fmt_signed(v, metric: str) -> str:
    if v is None:
        return "-"
    return ("+" if v >= 0 else "") + fmt_metric(v, metric)


def fmt_pm(v, spread, metric: str, signed: bool = False) -> str:
    """``v`` in ``metric``'s format, and `` ± spread`` where a spread (the sd over seeds) is given."""
    text = fmt_signed(v, metric) if signed else fmt_metric(v, metric)
    return text + (f" ± {fmt_metric(spread, metric)}" if spread is not None and text not in ("", "-") else "")


def spread_of(res: dict, key: str, *index: int):
    """The sd over seeds of ``res[key]`` (at ``index`` in a matrix or series), or None for a run of one seed."""
    v = (res.get(SD) or {}).get(key)
    for i in index:
        v = v[i] if isinstance(v, list) and i < len(v) else None
    return v


def seeds_note(results: dict) -> str:
    seeds = results.get(SEEDS)
    return f"Mean ± sd over {len(seeds)} seeds ({', '.join(map(str, seeds))}). " if seeds else ""


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def step_names(n: int) -> list[str]:
    return [f"{ORDINALS[i] if i < len(ORDINALS) else i + 1} task{'s' if i else ''}" for i in range(n)]


def method_label(name: str, res: dict) -> str:
    label = res.get(TITLE) or name
    return label + (" (task id)" if res.get(TASK_ID_AT_TEST) and "task id" not in label else "")


def routed_label(name: str, res: dict) -> str:
    """The row label of a method answered through the task router: its title, without "(task id)", and "(router)"."""
    return (res.get(TITLE) or name).replace(" (task id)", "") + " (router)"


def routed_summary(results: dict, res: dict) -> dict | None:
    """The summary figures (``evaluate.summarize``) of a method's routed matrix in the run's metric (``--router on``:
    answered through the task router, without the task identity), or None without one."""
    from ..evaluate import summarize

    mat = (res.get(ROUTED) or {}).get(results[METRIC])
    if not mat:
        return None
    return summarize([row[: i + 1] for i, row in enumerate(mat)], metric=results[METRIC])


def router_table(results: dict) -> Table:
    """One row per method run with ``--router on``: the task router's accuracy on each task's test images after the
    last task trained, and their mean."""
    tasks = results[TASKS]
    rows = []
    for name, res in results[METHODS].items():
        acc = res.get(ROUTER_ACCURACY) or []
        if not acc:
            continue
        last = acc[-1] or []
        cells = [f"{100 * last[j]:.0f}%" if j < len(last) else "" for j in range(len(tasks))]
        rows.append([routed_label(name, res)] + cells + [f"{100 * sum(last) / len(last):.0f}%" if last else ""])
    return Table(
        f"Task router accuracy: {results[BENCHMARK]}",
        ["Method"] + [f"T{j + 1} {t}" for j, t in enumerate(tasks)] + ["mean"],
        rows,
        note="--router on: the share of each task's test images the router sends to that task's generator, after the last task trained "
        "(the router is trained without old data, on its mappers' samples of the past tasks).",
    )


def matrix_table(results: dict, name: str, metric: str | None = None) -> Table:
    """The paper's Table 1 layout for one method: rows = tasks, columns = after k tasks, and an AVG row."""
    metric = metric or results[METRIC]
    res = results[METHODS][name]
    key = MATRIX if metric == results[METRIC] else metric
    mat = res[key]
    tasks = results[TASKS]
    n_done = len(mat)
    ident = identity(results, metric)
    ident_sd = (results.get(IDENTITY_SD) or {}).get(metric) or [None] * len(tasks)
    header = [get_metric(metric).title] + step_names(len(tasks)) + (["input"] if ident else [])
    rows = []
    for j, tname in enumerate(tasks):
        cells = [f"T{j + 1} {tname}"]
        for i in range(len(tasks)):
            v = mat[i][j] if i < n_done and j < len(mat[i]) else None
            cells.append(fmt_pm(v, spread_of(res, key, i, j), metric))
        rows.append(cells + ([fmt_pm(ident[j], ident_sd[j], metric)] if ident else []))
    if res.get(SD) and key == MATRIX:  # over seeds: the mean of each seed's AVG, and its sd
        avgs, avg_sd = res.get(AVG) or [], [spread_of(res, AVG, i) for i in range(n_done)]
    else:
        avgs, avg_sd = [sum(r[: i + 1]) / (i + 1) for i, r in enumerate(mat)], [None] * n_done
    rows.append(
        ["AVG"]
        + [fmt_pm(avgs[i], avg_sd[i], metric) if i < min(n_done, len(avgs)) else "" for i in range(len(tasks))]
        + ([fmt_metric(sum(ident) / len(ident), metric)] if ident else [])
    )
    notes = [seeds_note(results).strip()] if results.get(SEEDS) else []
    notes += ["input: the score of returning the input unchanged (doing nothing)."] if ident else []
    if res.get(FAILED):
        f = res[FAILED]
        notes.append(f"Failed: diverged on task {f.get('task')} ({f.get('task_name')}) at step {f.get('step')}: {f.get('reason')}.")
    return Table(method_label(name, res), header, rows, rules_before={len(tasks)}, note=" ".join(notes))


def failed_note(entry: dict) -> str:
    """``"; failed at task K step S"`` for a method that diverged, else ``""``."""
    f = entry.get(FAILED)
    return f"; failed at task {f.get('task')} step {f.get('step')}" if f else ""


PROVENANCE = ("date", "command", "assocgan", "torch", "python", "device", "platform", "git_commit")


def provenance_table(entries: list[dict]) -> Table:
    """Who made a run: one row per start or resume (command, versions, device, git commit)."""
    rows = [[str(e.get(k) or "") for k in PROVENANCE] for e in entries]
    return Table("Made by", list(PROVENANCE), rows)


def identity(results: dict, metric: str) -> list[float] | None:
    """The do-nothing score of every task in ``metric``, or None where the results do not hold it."""
    vals = (results.get(IDENTITY) or {}).get(metric)
    return list(vals) if vals and len(vals) == len(results[TASKS]) and None not in vals else None


def below_input(res: dict, ident: list[float] | None, metric: str) -> str:
    """The tasks on which a complete method ends below (worse than) doing nothing, in the benchmark's ``metric``:
    "none", a list such as "T2,T4", or "" where unknown."""
    if not ident or not res.get(COMPLETE):
        return ""
    m = get_metric(metric)
    below = [f"T{j + 1}" for j, v in enumerate(res[MATRIX][-1]) if v is not None and m.better(ident[j], v)]
    return ",".join(below) or "none"


def fmt_seconds(v, spread=None) -> str:
    return f"{v:.0f}" + (f" ± {spread:.0f}" if spread is not None else "")


def seeds_table(results: dict) -> Table:
    """A run over seeds: each method's summary figures in each seed (``per_seed`` of the combined results)."""
    metric = results[METRIC]
    seeds = results[SEEDS]
    header = ["Method", "figure"] + [f"seed {s}" for s in seeds] + ["mean ± sd"]
    rows, rules = [], set()
    shown = ((FINAL_AVG, f"final AVG ({get_metric(metric).title})", False), (BWT, "BWT", True), (FWT, "FWT", True))
    for name, res in results[METHODS].items():
        per = res.get(PER_SEED) or {}
        if rows:
            rules.add(len(rows))
        for key, label, signed in shown:
            vals = per.get(key) or [None] * len(seeds)
            cell = (lambda v: fmt_signed(v, metric)) if signed else (lambda v: fmt_metric(v, metric) or "-")
            rows.append([method_label(name, res), label] + [cell(v) for v in vals] + [fmt_pm(res.get(key), spread_of(res, key), metric, signed)])
        secs = per.get(TRAIN_SECONDS) or [None] * len(seeds)
        rows.append(
            [method_label(name, res), "train s"]
            + ["-" if v is None else f"{v:.0f}" for v in secs]
            + [fmt_seconds(res.get(TRAIN_SECONDS) or 0, spread_of(res, TRAIN_SECONDS))]
        )
    return Table(
        f"Per seed: {results[BENCHMARK]}",
        header,
        rows,
        rules_before=rules,
        note="Each seed is a run folder of its own (seed<k>/); the mean ± sd is over the seeds (sample standard deviation); "
        "- where a seed has not finished the method.",
    )


def summary_table(results: dict) -> Table:
    """One row per method: final AVG, BWT, forgetting, memory, train time; and the gap closed from TL to JL."""
    metric = results[METRIC]
    m = get_metric(metric)
    methods = results[METHODS]
    header = ["Method", f"final AVG ({m.title})", "BWT", "FWT", "forgetting", "memory", "train s", "CPU s", "TL->JL gap closed", "below input"]
    tl, jl = methods.get("tl", {}).get(FINAL_AVG), methods.get("jl", {}).get(FINAL_AVG)
    both = tl is not None and jl is not None and methods["tl"].get(COMPLETE) and methods["jl"].get(COMPLETE)
    gap_ok = both and m.better(jl, tl)
    ident = identity(results, metric)
    gap_note = ""
    if not gap_ok and methods:
        gap_note = (
            " TL->JL gap closed is blank: JL does not end above TL on this run, so there is no gap to close."
            if both
            else " TL->JL gap closed is blank: it needs TL and JL both complete in this run."
        )
    rows, short = [], []
    if ident:
        rows.append(["Input (do nothing)", fmt_metric(sum(ident) / len(ident), metric)] + [""] * (len(header) - 2))
        short.append("do nothing")

    def gap_closed(final: float | None, complete: bool) -> str:
        return f"{100 * (final - tl) / (jl - tl):.0f}%" if gap_ok and complete and final is not None else ""

    any_routed = False
    for name, res in methods.items():
        closed = gap_closed(res.get(FINAL_AVG), bool(res.get(COMPLETE)))
        done = "" if res.get(COMPLETE) else f" ({len(res[MATRIX])}/{len(results[TASKS])} tasks{failed_note(res)})"
        short.append(name + ("" if res.get(COMPLETE) else f" ({len(res[MATRIX])}/{len(results[TASKS])}{', failed' if res.get(FAILED) else ''})"))
        rows.append(
            [
                method_label(name, res) + done,
                fmt_pm(res.get(FINAL_AVG), spread_of(res, FINAL_AVG), metric),
                fmt_pm(res.get(BWT), spread_of(res, BWT), metric, signed=True),
                fmt_pm(res.get(FWT), spread_of(res, FWT), metric, signed=True),
                fmt_pm(res.get(FORGETTING), spread_of(res, FORGETTING), metric) or "-",
                fmt_bytes(res.get(MEMORY_BYTES)),
                fmt_seconds(res.get(TRAIN_SECONDS, 0), spread_of(res, TRAIN_SECONDS)),
                fmt_seconds(res[TRAIN_CPU_SECONDS], spread_of(res, TRAIN_CPU_SECONDS)) if res.get(TRAIN_CPU_SECONDS) else "-",
                closed,
                below_input(res, ident, metric),
            ]
        )
        routed = routed_summary(results, res)
        if routed is not None:  # the same method answered through the task router: no task identity
            any_routed = True
            as_routed = {MATRIX: res[ROUTED][metric], COMPLETE: res.get(COMPLETE)}
            short.append(f"{name} (router)")
            rows.append(
                [
                    routed_label(name, res),
                    fmt_metric(routed[FINAL_AVG], metric),
                    fmt_signed(routed[BWT], metric),
                    "-",
                    fmt_metric(routed[FORGETTING], metric) or "-",
                    fmt_bytes(res.get(MEMORY_BYTES)),
                    fmt_seconds(res.get(TRAIN_SECONDS, 0)),
                    fmt_seconds(res[TRAIN_CPU_SECONDS]) if res.get(TRAIN_CPU_SECONDS) else "-",
                    gap_closed(routed[FINAL_AVG], bool(res.get(COMPLETE))),
                    below_input(as_routed, ident, metric),
                ]
            )
    return Table(
        f"Summary: {results[BENCHMARK]}",
        header,
        rows,
        note=seeds_note(results) + "BWT and FWT: backward and forward transfer (Lopez-Paz & Ranzato 2017; FWT: each task before its training, "
        "against the untrained generator; - where not defined). train s: wall-clock seconds of training (evaluation excluded); CPU s: the process's CPU seconds over the same span, "
        "comparable between runs on a shared machine. "
        + (
            "(router): the row above answered through the task router (--router on), without the task identity; its memory and time include the router's. "
            if any_routed
            else ""
        )
        + "below input: the tasks on which the method ends below doing nothing (a defect, not a result)."
        + gap_note,
        rules_before={1} if ident else set(),
        short_labels=short,
    )


def measures_table(results: dict) -> Table:
    """One row per method: the continual-learning measures beside the final average, each in the metric's own
    direction (docs/methods.md, "How methods are compared"): BWT, forgetting in its two conventions, the stability
    gap, intransigence against JL and the plasticity gap against the single-task specialists; and whether the method
    is told the task at test time."""
    metric = results[METRIC]
    m = get_metric(metric)
    header = [
        "Method",
        "BWT",
        "forgetting (best - final)",
        "forgetting (after - final)",
        "stability gap",
        "intransigence (vs JL)",
        "plasticity gap (vs specialist)",
        "task id at test",
    ]
    keys = (BWT, FORGETTING, FORGETTING_LAST, STABILITY_GAP, INTRANSIGENCE, PLASTICITY_GAP)
    rows = []
    for name, res in results[METHODS].items():
        cells = [fmt_pm(res.get(k), spread_of(res, k), metric, signed=k == BWT) or "-" for k in keys]
        rows.append([method_label(name, res)] + cells + ["yes" if res.get(TASK_ID_AT_TEST) else "no"])
    return Table(
        f"Continual-learning measures ({m.title}): {results[BENCHMARK]}",
        header,
        rows,
        note=seeds_note(results) + "In the metric's units and direction; positive forgetting, stability gap, intransigence and plasticity gap mean worse. "
        "Forgetting: best earlier score minus final (Chaudhry et al. 2018) and score right after the task's training minus final "
        "(Avalanche; = -BWT). Stability gap: the deepest dip of an old task below its score right after training, during the later tasks' "
        "training (De Lange et al. 2023; needs --eval-every, - without it). Intransigence: JL's score on each new task right after its training "
        "minus the method's (Chaudhry et al. 2018); plasticity gap: the same against the single-task specialists (--methods single); - where "
        "that reference is not in the run.",
    )


def tasks_table(results: dict) -> Table:
    """The benchmark's tasks in training order, with the score of doing nothing (input as output)."""
    descr = results.get(TASK_DESCRIPTIONS) or [""] * len(results[TASKS])
    ident = results.get(IDENTITY) or {}
    spread = results.get(IDENTITY_SD) or {}
    scored = scored_metrics(results)
    rows = []
    for j, name in enumerate(results[TASKS]):
        cells = [fmt_pm((ident.get(m) or [None] * (j + 1))[j], (spread.get(m) or [None] * (j + 1))[j], m) for m in scored]
        rows.append([f"T{j + 1}", name, descr[j] if j < len(descr) else ""] + cells)
    titles = [get_metric(m).title for m in scored]
    cfg = results.get(CONFIG)
    every = ""
    if cfg:
        images = "each test image at its own size, translated in blended tiles" if cfg.get("eval_full") else f"test crops of {cfg.get('size', '?')} px"
        every = f"Every score: {' and '.join(titles)} {convention_of(cfg).describe()}, on {images}. "
    return Table(
        f"Tasks: {results[BENCHMARK]}",
        ["Task", "name", "recipe"] + [f"input {t}" for t in titles],
        rows,
        note=every + f"input {'/'.join(titles)}: the test score of returning the input unchanged, the floor a model must beat.",
    )


def metrics_table(results: dict) -> Table:
    """One row per method: the average over the tasks trained so far, after the last of them, in every metric the
    run scored (its headline metric's column is the summary's final AVG)."""
    scored = scored_metrics(results)
    titles = [get_metric(m).title for m in scored]
    rows = []
    ident = {m: identity(results, m) for m in scored}
    if all(ident.values()):
        rows.append(["Input (do nothing)"] + [fmt_metric(sum(ident[m]) / len(ident[m]), m) for m in scored])
    for name, res in results[METHODS].items():
        cells = []
        for m in scored:
            mat = res.get(MATRIX if m == results[METRIC] else m) or []
            last = mat[-1][: len(mat)] if mat else []
            cells.append(fmt_metric(sum(last) / len(last), m) if last and None not in last else "-")
        rows.append([method_label(name, res) + ("" if res.get(COMPLETE) else " (partial)")] + cells)
    return Table(
        f"Every metric: {results[BENCHMARK]}",
        ["Method"] + [f"final AVG ({t})" for t in titles],
        rows,
        note=f"The mean over the tasks trained so far, after the last of them, in each metric the run scored ({', '.join(titles)}); "
        f"{get_metric(results[METRIC]).title}, the benchmark's metric, is the summary's. Over seeds: the mean of the seeds' matrices.",
    )


def run_tables(results: dict) -> list[Table]:
    """The tables of a run, as printed at its end: one accuracy matrix per method (Table 1 layout), the summary, the
    continual-learning measures, and the final averages in every metric the run scored."""
    tables = [matrix_table(results, name) for name in results[METHODS]] + [summary_table(results), measures_table(results)]
    tables += [metrics_table(results)] if results[METHODS] and len(scored_metrics(results)) > 1 else []
    tables += [router_table(results)] if any(res.get(ROUTER_ACCURACY) for res in results[METHODS].values()) else []
    return tables + ([seeds_table(results)] if results.get(SEEDS) and results[METHODS] else [])


# ---- studies (from the ``summary`` of a study.json; each kind's own tables are in its file of assocgan.studies) ----
def study_seeds_note(summary: dict) -> str:
    """A study table's note on its spreads, when its runs were made over several seeds."""
    note = seeds_note(summary)
    return f" {note}A cell without ± is a mean only (the prior mean, and the metric other than the benchmark's)." if note else ""


def perceptual_table(summary: dict) -> Table:
    """The paper's Table 4 (user study): each method's share of the votes for the most realistic output, per
    task and over all tasks, with its number of votes and a 95% Wilson interval (from ``perceptual.votes.tally``)."""
    tasks, totals = summary["tasks"], summary["totals"]
    header = ["Method"] + [f"T{j + 1} {t} (n={n})" for j, (t, n) in enumerate(zip(tasks, totals))] + [f"All tasks (n={totals[-1]})"]
    rows = []
    for m in summary["methods"]:
        cells = [f"{c['share']:.2f} ({c['k']}) [{c['interval'][0]:.2f}, {c['interval'][1]:.2f}]" if c["n"] else "-" for c in summary["cells"][m]]
        rows.append([method_label(m, summary["titles"].get(m) or {})] + cells)
    chance = 1 / len(summary["methods"])
    people = f"{summary['participants']} participant" + ("s" if summary["participants"] != 1 else "")
    return Table(
        f"User study: share of the votes for the most realistic output ({summary['benchmark']}, {people}, {summary['groups']} groups)",
        header,
        rows,
        note=f"A cell: the share of the votes cast on the task's groups that chose the method, (its number of votes), [95% Wilson "
        f"interval]; n: the votes cast on the task. A pick at random gets {chance:.2f}. "
        + ("The target was shown beside the input." if summary.get("show_target") else "The target was not shown."),
    )


def study_runs_table(study: dict) -> Table:
    """The runs of a study: what each is, where it is, and how far it got."""
    summary = study.get("summary") or {}
    metric = summary.get("metric", DEFAULT_METRIC)
    status = {r["name"]: r for r in summary.get("runs", [])}
    rows = []
    for spec in study.get("runs", []):
        st = status.get(spec["name"], {})
        rows.append(
            [
                spec["label"],
                f"runs/{spec['name']}",
                ",".join(spec.get("methods", [])),
                st.get("status", "pending"),
                fmt_metric(st.get(FINAL_AVG), metric),
                f"{st[TRAIN_SECONDS]:.0f}" if st.get(TRAIN_SECONDS) is not None else "",
            ]
        )
    return Table("Runs of this study", ["Run", "folder", "methods", "status", f"final AVG ({get_metric(metric).title})", "train s"], rows)


# ---- renderers -------------------------------------------------------------------------
def to_text(table: Table) -> str:
    widths = [max([len(table.header[c])] + [len(r[c]) for r in table.rows]) for c in range(len(table.header))]

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [table.title, rule, line(table.header), rule]
    for i, r in enumerate(table.rows):
        if i in table.rules_before:
            out.append(rule)
        out.append(line(r))
    out.append(rule)
    if table.note:
        out.append(table.note)
    return "\n".join(out)


def to_markdown(table: Table) -> str:
    out = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(table.header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in table.rows]
    if table.note:
        out += ["", table.note]
    return "\n".join(out)


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX typesets it literally ("->" as an arrow)."""
    text = text.replace("->", "\x00")
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text).replace("\x00", r"$\to$")


def to_latex(table: Table) -> str:
    """A booktabs table (``\\usepackage{booktabs}``): the title as caption, a rule between blocks, the note below."""
    e = latex_escape
    cols = "l" + "r" * (len(table.header) - 1)
    out = [
        r"\begin{table}[htbp]",
        r"\centering",
        f"\\caption{{{e(table.title)}}}",
        f"\\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(e(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    for i, r in enumerate(table.rows):
        if i in table.rules_before:
            out.append(r"\midrule")
        out.append(" & ".join(e(c) for c in r) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.note:
        out.append(f"\\par\\smallskip{{\\footnotesize {e(table.note)}}}")
    out.append(r"\end{table}")
    return "\n".join(out)


def to_html(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table.header)
    body = []
    for i, r in enumerate(table.rows):
        cls = ' class="rule"' if i in table.rules_before else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    note = f'<p class="note">{e(table.note)}</p>' if table.note else ""
    return f"<table><caption>{e(table.title)}</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def to_rich(table: Table, width: int | None = None):
    """The table for a terminal of ``width`` columns: row labels (a method's name, short where the table has short
    labels) and numbers never wrap; where the table is too wide, its headers break at their spaces instead."""
    from rich import box
    from rich.table import Table as RichTable

    rows = [[table.short_labels[i], *r[1:]] if len(table.short_labels) == len(table.rows) else r for i, r in enumerate(table.rows)]
    header = list(table.header)
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]
    narrow = width is not None and sum(widths) + 3 * len(widths) > width
    if narrow:
        header = [h.replace(" ", "\n") for h in header]
    t = RichTable(
        title=table.title,
        title_justify="left",
        caption=table.note or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0) if narrow else (0, 1),
    )
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right", overflow="fold", no_wrap=i == 0)
    for i, r in enumerate(rows):
        t.add_row(*r, end_section=(i + 1) in table.rules_before)
    return t
