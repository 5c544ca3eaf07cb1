"""``report.html``: a self-contained page (images embedded) built from a run folder's files alone."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..io import read_json, write_text
from .tables import matrix_table, summary_table, to_html

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}caption{font-weight:bold;text-align:left;padding:.3em 0}
td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}
tr.rule td{border-top:2px solid #888}.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0}
img{image-rendering:pixelated;max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_report(folder: str | Path) -> Path:
    folder = Path(folder)
    results = read_json(folder / "results.json")
    if results is None:
        from ..errors import UserError

        raise UserError(f"{folder}: no results.json to report on")
    parts = [f"<h1>assocgan run: {html.escape(results['benchmark'])}</h1>"]
    parts.append(f"<p>Tasks: {html.escape(', '.join(results['tasks']))}. Metric: {results['metric'].upper()}.</p>")
    parts.append("<h2>Summary</h2>" + to_html(summary_table(results)))
    parts.append("<h2>Accuracy matrices</h2>")
    parts += [to_html(matrix_table(results, name)) for name in results["methods"]]
    plots = sorted((folder / "plots").glob("*.png")) if (folder / "plots").is_dir() else []
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(f"<figure>{_img(p, p.stem)}<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in plots))
    parts.append("<h2>Samples (input, output, target; one row per task)</h2>")
    for name in results["methods"]:
        d = folder / "samples" / name
        if d.is_dir():
            imgs = sorted(d.glob("*.png"))
            if imgs:
                last = imgs[-1]
                parts.append(f"<h3>{html.escape(name)}</h3><figure>{_img(last, name)}<figcaption>{html.escape(last.stem)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(results.get("config", {}), indent=2)) + "</pre>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>assocgan report</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    return write_text(folder / "report.html", page)
