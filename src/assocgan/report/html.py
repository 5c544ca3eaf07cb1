"""``report.html``: one self-contained page (styles inline, images embedded, no script, no network) built
from a run folder's or a study folder's files alone. Printed (to paper or PDF) it holds everything: the
navigation bar goes, wide tables wrap their cells, and the collapsed sections (``<details>``) print open.

A run folder has ``results.json`` (and ``samples/``); writing its report also rewrites its plots (``plots/``). A
study folder has ``study.json`` (its runs are run folders under ``runs/``); its page is assembled here from what
its kind gives (``assocgan.studies`` writes it: this layer knows no kind of study).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Collection
from pathlib import Path

from ..errors import UserError, is_whole_number
from ..io import write_text
from ..metrics import get_metric
from ..results import BENCHMARK, CONFIG, INPUTS, METHODS, METRIC, PROVENANCE, RUNS, SEEDS, TASKS, TITLE, scored_metrics
from ..runfolder import RunFolder
from .plots import other_metrics, run_captions, write_plots
from .tables import Table, matrix_table, measures_table, perceptual_table, provenance_table, seeds_table, study_runs_table, summary_table, tasks_table, to_html

REPORT = "report.html"
# nothing but the page itself: inline styles and embedded images (a stray external file shows as a console error)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root{--fg:#1d1d1f;--muted:#666;--line:#ddd;--accent:#2a5db0;--bg2:#f6f7f9}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:1.5em 2em 4em;max-width:1180px;color:var(--fg);line-height:1.45}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:2em;border-bottom:2px solid var(--line);padding-bottom:.2em}
h3{font-size:1.05em;margin:1.4em 0 .4em}
nav{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid var(--line);font-size:.92em;z-index:1}
nav a{margin-right:1.1em;color:var(--accent);text-decoration:none}
.lead{color:var(--muted);margin:.3em 0 1em}
.tables{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}
table{border-collapse:collapse;margin:.8em 0;font-variant-numeric:tabular-nums;font-size:.92em}
caption{font-weight:600;text-align:left;padding:.3em 0}
td,th{padding:.25em .7em;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:var(--bg2)}td:first-child,th:first-child{text-align:left}
tr.rule td{border-top:2px solid #888}
p.note{color:var(--muted);font-size:.85em;margin:-.4em 0 1em;max-width:60em}
figure{margin:.8em 0 1.6em}figcaption{color:var(--muted);font-size:.88em;margin-top:.3em;max-width:60em}
.plots{display:flex;flex-wrap:wrap;gap:0 1.5em;align-items:flex-start}
figure.plot{flex:1 1 480px;max-width:640px}figure.plot.wide{flex-basis:100%;max-width:100%}
figure.plot img{max-width:100%;height:auto;border:1px solid var(--line)}
.samples{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.samples figure{margin:0}
.samples img{image-rendering:pixelated;max-width:100%;height:auto;border:1px solid var(--line)}
details{margin:.6em 0}summary{cursor:pointer;color:var(--accent)}
pre{background:var(--bg2);padding:1em;overflow:auto;font-size:.85em}
.missing{color:#a33}
@media print{
@page{margin:12mm}
body{max-width:none;padding:0;font-size:9pt}
nav{display:none}
h2{break-after:avoid}
table,figure,tr{break-inside:avoid}
td,th{white-space:normal;overflow-wrap:anywhere;padding:.15em .45em}
.tables{display:block}
figure.plot,figure.plot.wide{max-width:100%}
details::details-content{content-visibility:visible;display:contents}
details>summary{list-style:none;color:var(--fg);font-weight:600}
pre{white-space:pre-wrap;overflow:visible}
}
"""

WIDE = {"forgetting", "memory"}  # run plots shown at full width


def _e(s) -> str:
    return html.escape(str(s))


def img_tag(path: Path, alt: str, cls: str = "") -> str:
    """An <img> with the PNG embedded as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _tables(tables: list[Table]) -> str:
    return '<div class="tables">' + "".join(f"<div>{to_html(t)}</div>" for t in tables) + "</div>"


def _plots(folder: Path, captions: dict[str, str], wide: Collection[str]) -> str:
    """The PNGs of ``folder/plots/`` in the order of ``captions`` (by stem), each under its caption; those of ``wide``
    at the page's full width."""
    d = folder / "plots"
    files = sorted(d.glob("*.png")) if d.is_dir() else []
    order = {s: i for i, s in enumerate(captions)}
    files.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    figs = "".join(
        f'<figure class="plot{" wide" if p.stem in wide else ""}">{img_tag(p, p.stem)}<figcaption>{_e(captions.get(p.stem, p.stem))}</figcaption></figure>'
        for p in files
    )
    return f'<div class="plots">{figs}</div>' if figs else ""


def _sample_files(folder: Path, name: str) -> list[Path]:
    d = folder / "samples" / name
    if not d.is_dir():
        return []

    def task_no(p: Path) -> int:
        head = p.stem.split("_")[1] if p.stem.startswith("after_task") else ""
        digits = head.removeprefix("task")
        return int(digits) if is_whole_number(digits) else 0

    return sorted(d.glob("after_task*.png"), key=lambda p: (task_no(p), p.name))


def _caption_of(p: Path) -> str:
    parts = p.stem.split("_", 2)  # after, taskK, name
    if len(parts) == 3 and parts[1].startswith("task"):
        return f"after task {parts[1][4:]} ({parts[2]})"
    return p.stem


def _samples(folder: Path, results: dict, only_last: bool = False) -> str:
    out = []
    for name, res in results[METHODS].items():
        files = _sample_files(folder, name)
        title = _e(res.get(TITLE) or name)
        if not files:
            out.append(f"<h3>{title}</h3><p class='missing'>no sample grids in samples/{_e(name)}/</p>")
            continue
        if only_last:
            files = files[-1:]
        figs = "".join(f"<figure>{img_tag(p, f'{name} {p.stem}')}<figcaption>{_e(_caption_of(p))}</figcaption></figure>" for p in files)
        out.append(f"<h3>{title}</h3><div class='samples'>{figs}</div>")
    return "".join(out)


def _pictures(folder: Path, results: dict) -> str:
    """The last picture of each kind that a method wrote to pictures/<method>/."""
    out = []
    for name, res in results[METHODS].items():
        d = folder / "pictures" / name
        files = sorted(d.glob("*.png")) if d.is_dir() else []
        if files:
            last = files[-1]
            out.append(
                f"<h3>{_e(res.get(TITLE) or name)}</h3><div class='samples'><figure>{img_tag(last, f'{name} {last.stem}')}"
                f"<figcaption>{_e(last.stem.replace('_', ' '))}</figcaption></figure></div>"
            )
    return "".join(out)


def _page(title: str, nav: list[tuple[str, str]], body: list[str]) -> str:
    links = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in nav)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<nav>{links}</nav>{''.join(body)}</body></html>"
    )


def _config(obj) -> str:
    return "<pre>" + _e(json.dumps(obj, indent=2)) + "</pre>"


# ---- run folders ------------------------------------------------------------------------
def run_page(folder: Path, results: dict) -> str:
    metric = results[METRIC]
    title = get_metric(metric).title
    cfg = results.get(CONFIG) or {}
    methods = results[METHODS]
    seeds = results.get(SEEDS)
    body = [f"<h1>assocgan run: {_e(results[BENCHMARK])}</h1>"]
    which = (
        f"seeds {', '.join(map(str, seeds))} (mean ± sd; each seed's own run folder and report in seed&lt;k&gt;/)"
        if seeds
        else f"seed {_e(cfg.get('seed', '?'))}"
    )
    body.append(
        f"<p class='lead'>{len(results[TASKS])} tasks ({_e(', '.join(results[TASKS]))}), metric {title}, "
        f"methods {_e(', '.join(methods) or 'none yet')}; {cfg.get('size', '?')} px, {cfg.get('steps', '?')} steps per task, {which}.</p>"
    )
    summary = [summary_table(results), measures_table(results)] + ([seeds_table(results)] if seeds else [])
    body.append("<h2 id='summary'>Summary</h2>" + (_tables(summary) if methods else "<p class='missing'>no method has finished a task yet</p>"))
    body.append("<h2 id='tasks'>Tasks</h2>" + _tables([tasks_table(results)]))
    body.append(f"<h2 id='matrices'>Accuracy matrices ({title}, the paper's Table 1 layout)</h2>")
    body.append("<p class='note'>Row: a task; column: after training k tasks; AVG: mean over the tasks seen so far.</p>")
    body.append(_tables([matrix_table(results, n) for n in methods]))
    if methods:
        body += [
            f"<details><summary>the same in {get_metric(other).title}</summary>{_tables([matrix_table(results, n, other) for n in methods])}</details>"
            for other in scored_metrics(results)
            if other != metric
        ]
    votes = vote_tables(folder)
    if votes:
        body.append(
            "<h2 id='votes'>User study (the paper's Table 4)</h2><p class='note'>Votes cast on the page of <code>assocgan study "
            "perceptual</code> (perceptual/votes.sqlite): in each group, the output a participant found the most realistic.</p>" + _tables(votes)
        )
    wide = WIDE | {f"forgetting_{m}" for m in other_metrics(results)}
    body.append("<h2 id='plots'>Plots</h2>" + (_plots(folder, run_captions(results), wide) or "<p class='missing'>no plots</p>"))
    shown = folder / results[RUNS][0] if seeds and results.get(RUNS) else folder  # over seeds: the first seed's pictures
    body.append(
        "<h2 id='samples'>Samples</h2><p class='note'>One grid after each task: a row per task seen so far; "
        "blocks of inputs, outputs and targets (the first test images), headed so; under each input and output its score "
        "against the target, in the run's metric and evaluation convention" + (f"; from {_e(shown.name)}" if shown != folder else "") + ".</p>"
    )
    body.append(_samples(shown, results))
    pictures = _pictures(shown, results)
    if pictures:
        body.append(
            "<h2 id='pictures'>Method pictures</h2><p class='note'>What a method makes of its memory. Assoc-GAN "
            "(the paper's Figure 13): one row per past task; left block: that task's real inputs, then three "
            "blocks of association samples made by its mapper from the same targets, each with its score against the real input above it.</p>" + pictures
        )
    body.append("<h2 id='config'>Configuration</h2>" + _config(cfg))
    if results.get(INPUTS):
        body.append("<h3>Data</h3>" + _config(results[INPUTS]))
    if results.get(PROVENANCE):
        body.append(
            "<h3>Made by</h3><p class='note'>Each time the run was started or resumed: the command, the versions, the device and "
            "the source's git commit.</p>" + _tables([provenance_table(results[PROVENANCE])])
        )
    nav = [("summary", "Summary"), ("tasks", "Tasks"), ("matrices", "Matrices")] + ([("votes", "User study")] if votes else [])
    nav += [("plots", "Plots"), ("samples", "Samples")]
    nav += [("pictures", "Pictures")] if pictures else []
    nav += [("config", "Configuration")]
    return _page(f"assocgan run: {results[BENCHMARK]}", nav, body)


def vote_tables(folder: Path) -> list[Table]:
    """The user study's table (Table 4) of a run folder with votes (``assocgan study perceptual``); none without."""
    from ..perceptual.votes import tally

    summary = tally(folder)
    return [perceptual_table(summary)] if summary else []


# ---- study folders ----------------------------------------------------------------------
def study_page(folder: Path, study: dict, lead: str, tables: list[Table], captions: dict[str, str], wide: Collection[str]) -> str:
    """The page of a study folder from its record ``study`` (study.json) and what its kind gives: the ``lead``
    paragraph, its ``tables``, its figures' ``captions`` (by file stem) and those shown ``wide``."""
    kind = study.get("study", "?")
    summary = study.get("summary") or {}
    bench = summary.get("benchmark") or (study.get("base_config") or {}).get("benchmark", "")
    body = [f"<h1>assocgan study: {_e(kind)} on {_e(bench)}</h1>", f"<p class='lead'>{_e(lead)}</p>"]
    if study.get("command"):
        body.append(f"<p class='note'>Made by: <code>{_e(study['command'])}</code></p>")
    body.append("<h2 id='results'>Results</h2>" + (_tables(tables) if tables else "<p class='missing'>no run has finished yet</p>"))
    body.append("<h2 id='plots'>Plots</h2>" + (_plots(folder, captions, wide) or "<p class='missing'>no plots</p>"))
    body.append("<h2 id='runs'>Runs</h2>" + _tables([study_runs_table(study)]))
    body.append("<p class='note'>Each run is a normal run folder with its own report.html; below, each run's summary and its last sample grids.</p>")
    for spec in study.get("runs", []):
        run_dir = folder / "runs" / spec["name"]
        inner = f"<p class='missing'>not run yet ({_e('runs/' + spec['name'])})</p>"
        try:
            results = RunFolder(run_dir).read_results()
        except UserError as e:
            results, inner = None, f"<p class='missing'>{_e(e)}</p>"
        if results is not None and results.get(METHODS):
            link = f"<p><a href='runs/{_e(spec['name'])}/{REPORT}'>this run's own report</a></p>" if (run_dir / REPORT).exists() else ""
            inner = link + _tables([summary_table(results)]) + _samples(run_dir, results, only_last=True)
        body.append(f"<details><summary>{_e(spec['label'])} (runs/{_e(spec['name'])})</summary>{inner}</details>")
    body.append("<h2 id='config'>Configuration</h2><h3>Study</h3>" + _config({k: study.get(k) for k in ("study", "params", "bench_args", "command")}))
    body.append("<h3>Base run configuration</h3>" + _config(study.get("base_config") or {}))
    nav = [("results", "Results"), ("plots", "Plots"), ("runs", "Runs"), ("config", "Configuration")]
    return _page(f"assocgan study: {kind}", nav, body)


def write_report(folder: str | Path, plots: bool = True) -> Path:
    """(Re)write a run folder's ``report.html`` (and, with ``plots``, its ``plots/``) from its results.json (a study
    folder's: ``assocgan.studies.write_study_report``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found")
    results = RunFolder(folder).read_results()
    if results is None:
        raise UserError(f"{folder}: neither results.json (a run) nor study.json (a study) to report on")
    if plots:
        write_plots(folder)
    return write_text(folder / REPORT, run_page(folder, results))
