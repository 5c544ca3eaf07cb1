"""Every table is made here: a ``Table`` is built once from results and rendered as text, Markdown or HTML."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

ORDINALS = ["One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    rules_before: set[int] = field(default_factory=set)  # row indices that start a new block


def fmt_metric(v, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.2f}" if metric == "psnr" else f"{v:.3f}"


def fmt_signed(v, metric: str) -> str:
    if v is None:
        return "-"
    return ("+" if v >= 0 else "") + fmt_metric(v, metric)


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
    label = res.get("title") or name
    return label + (" (task id at test)" if res.get("task_id_at_test") else "")


def matrix_table(results: dict, name: str, metric: str | None = None) -> Table:
    """The paper's Table 1 layout for one method: rows = tasks, columns = after k tasks, and an AVG row."""
    metric = metric or results["metric"]
    res = results["methods"][name]
    mat = res["matrix"] if metric == results["metric"] else res[metric]
    tasks = results["tasks"]
    n_done = len(mat)
    header = [metric.upper()] + step_names(len(tasks))
    rows = []
    for j, tname in enumerate(tasks):
        cells = [f"T{j + 1} {tname}"]
        for i in range(len(tasks)):
            v = mat[i][j] if i < n_done and j < len(mat[i]) else None
            cells.append(fmt_metric(v, metric))
        rows.append(cells)
    avgs = [sum(r[: i + 1]) / (i + 1) for i, r in enumerate(mat)]
    rows.append(["AVG"] + [fmt_metric(avgs[i], metric) if i < n_done else "" for i in range(len(tasks))])
    return Table(method_label(name, res), header, rows, rules_before={len(tasks)})


def summary_table(results: dict) -> Table:
    """One row per method: final AVG, BWT, forgetting, memory, train time; and the gap closed from TL to JL."""
    metric = results["metric"]
    methods = results["methods"]
    header = ["Method", f"final AVG ({metric.upper()})", "BWT", "forgetting", "memory", "train s", "TL->JL gap closed"]
    tl, jl = methods.get("tl", {}).get("final_avg"), methods.get("jl", {}).get("final_avg")
    gap_ok = tl is not None and jl is not None and methods["tl"].get("complete") and methods["jl"].get("complete") and jl > tl
    rows = []
    for name, res in methods.items():
        closed = ""
        if gap_ok and res.get("complete"):
            closed = f"{100 * (res['final_avg'] - tl) / (jl - tl):.0f}%"
        done = "" if res.get("complete") else f" ({len(res['matrix'])}/{len(results['tasks'])} tasks)"
        rows.append([
            method_label(name, res) + done,
            fmt_metric(res.get("final_avg"), metric),
            fmt_signed(res.get("bwt"), metric),
            fmt_metric(res.get("forgetting"), metric) or "-",
            fmt_bytes(res.get("memory_bytes")),
            f"{res.get('train_seconds', 0):.0f}",
            closed,
        ])
    return Table(f"Summary: {results['benchmark']}", header, rows)


# ---- renderers -------------------------------------------------------------------------
def to_text(table: Table) -> str:
    widths = [max(len(table.header[c]), *(len(r[c]) for r in table.rows)) for c in range(len(table.header))]

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
    out = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in table.rows]
    if table.note:
        out += ["", table.note]
    return "\n".join(out)


def to_html(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table.header)
    body = []
    for i, r in enumerate(table.rows):
        cls = ' class="rule"' if i in table.rules_before else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    note = f'<p class="note">{e(table.note)}</p>' if table.note else ""
    return f'<table><caption>{e(table.title)}</caption><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}'


def to_rich(table: Table):
    from rich.table import Table as RichTable

    t = RichTable(title=table.title, title_justify="left")
    for i, h in enumerate(table.header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for i, r in enumerate(table.rows):
        t.add_row(*r, end_section=(i + 1) in table.rules_before)
    return t
