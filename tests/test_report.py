"""Plots, report.html and TensorBoard images of a run (and the page of a study folder), checked in files
and in headless Chromium (Debian's `chromium`, installed here when missing)."""

from __future__ import annotations

import contextlib
import html as htmlmod
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assocgan.cli import main
from assocgan.io import read_json, write_json
from assocgan.report import plots
from assocgan.report.html import write_report
from assocgan.report.tables import tasks_table, to_text
from assocgan.studies import write_study_plots, write_study_report
from assocgan.studies.ablation import ablation_table
from assocgan.studies.order import order_table
from assocgan.studies.quota import quota_table
from assocgan.studies.sweep import lambda_table
from browser import CHROMIUM_FLAGS

TINY = ["--preset", "smoke", "--size", "16", "--steps", "4", "--n-train", "4", "--n-test", "2", "--batch-size", "2", "--threads", "1"]
RUN_PLOTS = {"forgetting", "forgetting_ssim", "avg_by_task", "memory", "time", "time_vs_metric"}  # forgetting curves in each metric scored


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", *TINY, "--methods", "tl,jl", "--eval-every", "2", "--out", str(out)])
    assert code == 0, buf.getvalue()
    return out


@pytest.fixture(scope="module")
def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _png_ok(path: Path) -> None:
    im = np.asarray(Image.open(path).convert("RGB"))
    assert im.shape[0] > 50 and im.shape[1] > 50, path
    assert im.std() > 5, f"{path} looks blank"


# ---- files ---------------------------------------------------------------------------------
def test_run_ends_with_plots_and_report(run_dir):
    stems = {p.stem for p in (run_dir / "plots").glob("*.png")}
    assert RUN_PLOTS <= stems
    for p in (run_dir / "plots").glob("*.png"):
        _png_ok(p)
    assert not list((run_dir / "plots").glob(".*")), "temporary files left behind"
    assert (run_dir / "report.html").stat().st_size > 10_000


def test_report_is_self_contained_with_tables_plots_samples_config(run_dir, results):
    page = (run_dir / "report.html").read_text()
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', page), "no network resources"
    assert "<script" not in page
    # tables in the paper's layouts: summary, tasks, one Table 1 matrix per method (and the other metric)
    assert page.count("<table") >= 1 + 1 + 2 * len(results["methods"])
    for name, res in results["methods"].items():
        assert htmlmod.escape(res["title"]) in page
    for stem in RUN_PLOTS:
        assert f'alt="{stem}"' in page
    # a sample grid per task and method
    n_grids = sum(1 for s in re.findall(r'<img[^>]*alt="([^"]*)"', page) if "after_task" in s)
    assert n_grids == len(results["methods"]) * len(results["tasks"])
    assert "Configuration" in page and "&quot;steps&quot;: 4" in page


def test_report_rebuilds_from_files_alone(run_dir):
    before = (run_dir / "report.html").read_text()
    shutil.rmtree(run_dir / "plots")
    (run_dir / "report.html").unlink()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", str(run_dir)]) == 0
    assert buf.getvalue().strip().endswith("report.html")
    assert {p.stem for p in (run_dir / "plots").glob("*.png")} >= RUN_PLOTS
    after = (run_dir / "report.html").read_text()
    strip = lambda s: re.sub(r"base64,[^\"]*", "", s)
    assert strip(after) == strip(before)


def test_report_markdown_prints_the_run_tables(run_dir, results, capsys):
    assert main(["report", str(run_dir), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "**Summary:" in out and out.count("| AVG |") == len(results["methods"])
    tl = results["methods"]["tl"]
    row = next(line for line in out.splitlines() if line.startswith("| TL |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(tl["final_avg"], abs=0.006)  # final AVG as measured, 2 decimals
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| Method |")).strip("|").split("|")]
    cpu = cells[header.index("CPU s")]
    assert int(cpu) == round(tl["train_cpu_seconds"]) or cpu == "-"


def test_report_latex_prints_every_table_as_booktabs(run_dir, results, capsys):
    assert main(["report", str(run_dir), "--latex"]) == 0
    out = capsys.readouterr().out
    blocks = out.split(r"\begin{table}")[1:]
    assert len(blocks) == len(results["methods"]) + 3  # a matrix per method, the summary, the measures, every metric
    assert "Continual-learning measures" in blocks[-2]
    for b in blocks:
        body = b.split(r"\begin{tabular}", 1)[1].split(r"\end{tabular}", 1)[0]
        assert body.index(r"\toprule") < body.index(r"\midrule") < body.index(r"\bottomrule")
        assert r"\end{table}" in b
    summary = blocks[-3]
    body = summary.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    rows = [r for r in body.strip().splitlines() if r != r"\midrule"]  # a rule after the do-nothing row
    labels = [r.split(" & ")[0] for r in rows]
    assert labels == ["Input (do nothing)"] + [results["methods"][m]["title"] for m in results["methods"]]  # one row per method
    assert all(r.endswith(r" \\") and r.count(" & ") == 9 for r in rows)
    assert r"TL$\to$JL gap closed" in summary and "->" not in summary
    tl = results["methods"]["tl"]
    assert f"{tl['final_avg']:.2f}" in rows[1]


def test_latex_escapes_what_latex_would_read_as_commands():
    from assocgan.report.tables import Table, to_latex

    tex = to_latex(Table("gap_closed 50% & more", ["task_name", "share"], [["blur_3", "37%"], ["#1 {x}", "$5 ~ a^b \\"]], note="a_b: 10%"))
    assert r"\caption{gap\_closed 50\% \& more}" in tex
    assert r"blur\_3 & 37\% \\" in tex and r"task\_name & share \\" in tex
    assert r"\#1 \{x\} & \$5 \textasciitilde{} a\textasciicircum{}b \textbackslash{} \\" in tex
    assert r"{\footnotesize a\_b: 10\%}" in tex
    body = tex.replace(r"\_", "").replace(r"\%", "")
    assert "_" not in body and "%" not in body  # nothing left unescaped


def test_report_of_a_folder_without_results_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_tensorboard_has_a_stream_per_method_with_eval_curves_config_and_hparams(run_dir, results):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert sorted(p.name for p in (run_dir / "tb").iterdir()) == ["jl", "tl"]
    ea = EventAccumulator(str(run_dir / "tb" / "tl"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    assert set(tags["images"]) == {"samples"}
    steps = [e.step for e in ea.Images("samples")]
    assert steps == [4 * (t + 1) for t in range(len(results["tasks"]))]
    assert any(t.startswith("loss/") for t in tags["scalars"])
    # the methods overlay: each stream (a run) has the same tags, no method in them
    jl = EventAccumulator(str(run_dir / "tb" / "jl"), size_guidance={"scalars": 0})
    jl.Reload()
    assert "psnr/noise" in jl.Tags()["scalars"] and not any(t.startswith(("tl/", "jl/")) for t in tags["scalars"] + jl.Tags()["scalars"])
    # the evaluation curve: every --eval-every point (2) of every task seen, as results.json has it
    first = "psnr/noise"
    curve = results["methods"]["tl"]["curve"]
    assert [e.step for e in ea.Scalars(first)] == [c["step"] for c in curve]
    assert [round(e.value, 4) for e in ea.Scalars(first)] == [round(c["psnr"][0], 4) for c in curve]
    assert [e.step for e in ea.Scalars("ssim/blur")] == [14, 16]
    assert ea.Scalars("final/final_avg")[0].value == pytest.approx(results["methods"]["tl"]["final_avg"])
    assert "config/text_summary" in tags["tensors"]
    config = json.loads(ea.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode().strip("`\n"))
    assert config["method"] == "tl" and config["eval_every"] == 2
    plugins = ea.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def _event_steps(folder: Path) -> list[tuple[str, int]]:
    """(tag, step) of every scalar in a stream, as TensorBoard shows it: a SessionLog START at step p (a writer's
    purge_step) discards what earlier files logged at p or later."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    seen: list[tuple[str, int]] = []
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for ev in EventFileLoader(str(f)).Load():
            if ev.HasField("session_log") and ev.session_log.status == SessionLog.START:
                seen = [(t, s) for t, s in seen if s < ev.step]
            for v in ev.summary.value:
                if v.tag.startswith(("loss/", "psnr/", "ssim/")):
                    seen.append((v.tag, ev.step))
    return seen


def test_a_resumed_run_adds_no_duplicate_points(tmp_path, monkeypatch):
    from assocgan import runner

    out = tmp_path / "resumed"
    args = ["run", *TINY, "--methods", "tl", "--eval-every", "1", "--checkpoint-every", "2", "--out", str(out)]
    calls = []
    real = runner.save_samples

    def interrupted(*a, **kw):  # the run is killed at the end of task 2, two steps after its last saved state
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(runner, "save_samples", interrupted)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) != 0  # interrupted
    assert (out / "state" / "tl.pt").exists()
    before = _event_steps(out / "tb" / "tl")
    assert ("psnr/impulse", 7) in before  # logged after the saved state, before the kill
    monkeypatch.setattr(runner, "save_samples", real)
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0, buf.getvalue()
    steps = _event_steps(out / "tb" / "tl")
    assert len(steps) == len(set(steps)), sorted(t for t in steps if steps.count(t) > 1)[:5]
    assert [s for t, s in steps if t == "psnr/noise"] == list(range(1, 17))
    assert len(list((out / "tb" / "tl").glob("events.out.tfevents.*"))) == 2


def test_tensorboard_on_without_the_package_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from assocgan import board, runner

    monkeypatch.setattr(board, "tensorboard_available", lambda: False)  # as the command line checks --tensorboard
    monkeypatch.setattr(runner, "tensorboard_available", lambda: False)  # as a run checks it
    assert main(["run", *TINY, "--methods", "tl", "--tensorboard", "on", "--out", str(tmp_path / "a")]) == 2
    assert "pip install 'assocgan[tensorboard]'" in capsys.readouterr().err
    out = tmp_path / "b"  # without --tensorboard: the run goes on without streams, and says so
    assert main(["run", *TINY, "--methods", "tl", "--steps", "1", "--out", str(out)]) == 0
    assert "no TensorBoard logs" in capsys.readouterr().out and not (out / "tb").exists()


# ---- plot data ------------------------------------------------------------------------------
def test_forgetting_series_uses_curve_and_matrix(results):
    series = plots.task_series(results, "tl")
    assert len(series) == len(results["tasks"])
    xs, ys = series[0]
    # every 2 steps over 4 tasks of 4 steps, merged with the evaluation after each task
    assert xs == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
    assert ys[-1] == pytest.approx(results["methods"]["tl"]["matrix"][-1][0])
    xs3, _ = series[3]
    assert xs3 == [14.0, 16.0]


def test_forgetting_curves_over_seeds_carry_a_band_of_one_sd(results):
    from matplotlib.collections import PolyCollection

    from assocgan.seeds import combine

    one = plots.forgetting_figure(results)  # one seed: lines, no band
    assert not [c for ax in one.axes for c in ax.collections if isinstance(c, PolyCollection)]
    other = json.loads(json.dumps(results))
    for e in other["methods"].values():
        e["matrix"] = [[v + 1.0 if v is not None else None for v in row] for row in e["matrix"]]
        for c in e.get("curve") or []:
            c[other["metric"]] = [v + 1.0 if v is not None else None for v in c[other["metric"]]]
    both = combine({0: results, 1: other})
    xs, ys, sds = plots.task_series(both, "tl", spread=True)[0]
    assert ys[-1] == pytest.approx(results["methods"]["tl"]["matrix"][-1][0] + 0.5)
    assert all(d == pytest.approx(2**-0.5) for d in sds)  # the sd of (v, v + 1)
    fig = plots.forgetting_figure(both)
    bands = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == sum(1 for name in both["methods"] for xs, _ in plots.task_series(both, name) if xs)


def test_plots_fall_back_to_matrix_points_and_tolerate_partial_runs(results, tmp_path):
    res = json.loads(json.dumps(results))
    tl = res["methods"]["tl"]
    tl["curve"] = []
    # a method stopped after two tasks, keeping nothing
    part = json.loads(json.dumps(tl))
    for k in ("matrix", "psnr", "ssim", "memory_by_task", "train_seconds_by_task", "avg"):
        part[k] = part[k][:2]
    part.update(complete=False, title="Partial", bwt=None, forgetting=None)
    res["methods"]["part"] = part
    xs, ys = plots.task_series(res, "tl")[1]
    assert xs == [8.0, 12.0, 16.0] and len(ys) == 3
    write_json(tmp_path / "results.json", res)
    written = plots.write_plots(tmp_path)
    assert {p.stem for p in written} == RUN_PLOTS
    page = write_report(tmp_path).read_text()
    assert "Partial (2/4 tasks)" in page and "no sample grids" in page


def test_plots_come_as_pdf_and_svg_beside_each_png(run_dir):
    pngs = sorted((run_dir / "plots").glob("*.png"))
    assert {p.stem for p in pngs} >= RUN_PLOTS
    for p in pngs:
        pdf, svg = p.with_suffix(".pdf").read_bytes(), p.with_suffix(".svg").read_text()
        assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf, p.stem
        assert "<svg" in svg and "</svg>" in svg and "<dc:date>" not in svg, p.stem


def test_memory_plot_is_full_width(run_dir):
    page = (run_dir / "report.html").read_text()
    assert '<figure class="plot wide"><img alt="memory"' in page
    assert '<figure class="plot"><img alt="time"' in page  # the others as they were


def test_forgetting_curves_end_markers_lie_inside_the_axes(results):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    res = json.loads(json.dumps(results))
    for m in res["methods"].values():
        m["curve"] = []  # markers at each evaluation after a task, the last at the sequence's last step
    fig = plots.forgetting_figure(res)
    FigureCanvasAgg(fig).draw()
    checked = 0
    for ax in fig.axes:
        box = ax.get_window_extent()
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", ""):
                continue
            r = line.get_markersize() * fig.dpi / 72 / 2  # the marker's radius in pixels
            for x, y in ax.transData.transform(line.get_xydata()[[0, -1]]):
                assert box.x0 + r <= x <= box.x1 - r and box.y0 + r <= y <= box.y1 - r, (ax.get_title(), line.get_label())
                checked += 1
    assert checked >= 2 * len(res["tasks"])


def test_tasks_table_shows_the_do_nothing_floor(results):
    text = to_text(tasks_table(results))
    for t in results["tasks"]:
        assert t in text
    assert f"{results['identity']['psnr'][0]:.2f}" in text


# ---- study pages (from a synthetic study.json: test_studies runs real ones) -------------------
def _study(kind: str, summary: dict, runs: list[dict]) -> dict:
    return {"study": kind, "command": "assocgan study " + kind, "params": {}, "base_config": {"benchmark": "restore4"}, "runs": runs, "summary": summary}


SUMMARIES = {
    "quota": {
        "benchmark": "b",
        "metric": "psnr",
        "tasks": ["a", "b", "c"],
        "n_tasks": 3,
        "methods": [{"name": "tl", "label": "TL", "avg": [20.0, 18.0, 17.0]}, {"name": "jl", "label": "JL", "avg": [20.0, 21.0, None]}],
    },
    "order": {
        "benchmark": "b",
        "metric": "ssim",
        "tasks": ["a", "b"],
        "n_tasks": 2,
        "methods": [
            {
                "name": "tl",
                "label": "TL",
                "mean_by_position": [0.5, 0.8],
                "runs": [
                    {"order": "1,2", "tasks": ["a", "b"], "final": [0.4, 0.9], "final_avg": 0.65, "complete": True},
                    {"order": "2,1", "tasks": ["b", "a"], "final": [0.6, 0.7], "final_avg": 0.65, "complete": True},
                ],
            }
        ],
    },
    "lambda": {
        "benchmark": "b",
        "metric": "psnr",
        "method": "assoc",
        "option": "lambda_distill",
        "flag": "--lambda-distill",
        "prior_tasks": ["a", "b"],
        "tasks": ["a", "b", "c"],
        "n_tasks": 3,
        "rows": [
            {"value": 0.0, "final": [15.0, 16.0, 25.0], "prior_mean": 15.5, "last": 25.0, "overall": 18.67, "bwt": -5.0, "complete": True},
            {"value": 30.0, "final": [18.0, 19.0, 24.0], "prior_mean": 18.5, "last": 24.0, "overall": 20.33, "bwt": -2.0, "complete": True},
            {"value": 300.0, "final": None, "prior_mean": None, "last": None, "overall": None, "bwt": None, "complete": False},
        ],
    },
    "ablation": {
        "benchmark": "b",
        "metric": "psnr",
        "tasks": ["a", "b"],
        "n_tasks": 2,
        "rows": [
            {"label": "Backbone", "how": "tl --lambda-content 0", "psnr": 6.1, "ssim": 0.05, "bwt": -1.0, "complete": True},
            {"label": "Backbone+Lmse", "how": "tl --lambda-adv 0", "psnr": 13.1, "ssim": 0.46, "bwt": -3.0, "complete": True},
        ],
    },
}


@pytest.mark.parametrize("kind", list(SUMMARIES))
def test_study_tables_and_plots_from_summaries(kind, tmp_path):
    summary = SUMMARIES[kind]
    table = {"quota": quota_table, "order": order_table, "lambda": lambda_table, "ablation": ablation_table}[kind](summary)
    text = to_text(table)
    assert table.rows and text
    if kind == "ablation":
        assert "Backbone+Lmse" in text and "13.10" in text and "0.460" in text
    if kind == "lambda":
        assert "15.50" in text and "(partial)" in text
    if kind == "quota":
        assert "3.00" in text  # amplitude of TL: 20 - 17
    written = write_study_plots(tmp_path, _study(kind, summary, []))
    assert [p.stem for p in written] == [kind]
    _png_ok(written[0])


@pytest.fixture(scope="module")
def study_dir(run_dir, tmp_path_factory) -> Path:
    """A study folder whose one run is a copy of the run fixture."""
    d = tmp_path_factory.mktemp("study") / "study"
    shutil.copytree(run_dir, d / "runs" / "tl")
    res = read_json(run_dir / "results.json")
    summary = {
        "benchmark": res["benchmark"],
        "metric": res["metric"],
        "tasks": res["tasks"],
        "n_tasks": len(res["tasks"]),
        "runs": [{"name": "tl", "status": "done", "final_avg": res["methods"]["tl"]["final_avg"], "train_seconds": 1.0}, {"name": "jl", "status": "pending"}],
        "methods": [{"name": "tl", "label": "TL", "avg": res["methods"]["tl"]["avg"]}],
    }
    study = _study(
        "quota",
        summary,
        [
            {"name": "tl", "label": "TL", "how": "tl", "methods": ["tl"], "method": "tl"},
            {"name": "jl", "label": "JL", "how": "jl", "methods": ["jl"], "method": "jl"},
        ],
    )
    write_json(d / "study.json", study)
    write_study_report(d, study)
    return d


def test_study_page_lists_runs_with_their_samples(study_dir):
    page = (study_dir / "report.html").read_text()
    assert "assocgan study: quota" in page and 'alt="quota"' in page
    assert "runs/tl/report.html" in page and "not run yet" in page  # jl is pending
    assert page.count("after_task") >= 1


def test_report_markdown_of_a_study_prints_its_table(study_dir, capsys):
    assert main(["report", str(study_dir), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**") and "| TL |" in out and "Summary:" not in out


# ---- headless Chromium -----------------------------------------------------------------------
def _chromium(exe: str, tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{page.stem}-{len(list(tmp_path.iterdir()))}"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(exe: str, tmp_path: Path, report: Path) -> dict:
    """Open ``report`` in headless Chromium: its DOM, its console messages, and how many of its images
    decoded (checked by a copy of the page with a load-time script; the report itself has none)."""
    shown = _chromium(exe, tmp_path, report, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    console = [ln for ln in shown.stderr.splitlines() if ":CONSOLE" in ln]
    probe = tmp_path / f"probe-{report.parent.name}.html"
    script = (
        "<script>window.addEventListener('load',()=>{const im=[...document.images];"
        "document.body.setAttribute('data-probe',im.length+' '+im.filter(i=>!(i.complete&&i.naturalWidth>0)).length+' '"
        "+document.querySelectorAll('table').length+' '+document.body.scrollHeight);});</script>"
    )
    text = report.read_text()
    text = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", text)  # let the probe script run
    probe.write_text(text.replace("</body>", script + "</body>"))
    probed = _chromium(exe, tmp_path, probe, "--dump-dom")
    m = re.search(r'data-probe="(\d+) (\d+) (\d+) (\d+)"', probed.stdout)
    assert m, probed.stderr[-2000:]
    images, broken, tables, height = map(int, m.groups())
    return {"dom": shown.stdout, "console": console, "images": images, "broken": broken, "tables": tables, "height": height}


def test_run_report_renders_in_chromium(chromium, run_dir, results, tmp_path):
    r = render(chromium, tmp_path, run_dir / "report.html")
    assert r["console"] == [], r["console"]
    assert r["broken"] == 0
    assert r["images"] == len(RUN_PLOTS) + len(results["methods"]) * len(results["tasks"])
    assert r["tables"] >= 1 + 1 + 2 * len(results["methods"])
    assert r["dom"].count("<table") >= 4 and "Accuracy matrices" in r["dom"]
    assert r["height"] > 2000


def test_study_report_renders_in_chromium(chromium, study_dir, tmp_path):
    r = render(chromium, tmp_path, study_dir / "report.html")
    assert r["console"] == [], r["console"]
    assert r["broken"] == 0 and r["images"] >= 2  # the quota plot and the run's last sample grid
    assert r["tables"] >= 3  # quota table, runs table, the run's summary


def test_a_stray_external_image_shows_as_a_console_error(chromium, tmp_path):
    """The check above can fail: the page's Content-Security-Policy reports anything not embedded."""
    page = tmp_path / "bad" / "report.html"
    page.parent.mkdir()
    ok = (Path(__file__).parent / "missing.png").as_uri()
    page.write_text(
        "<!doctype html><html><head><meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:\">"
        f"</head><body><img src='{ok}'></body></html>"
    )
    shown = _chromium(chromium, tmp_path, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert any(":CONSOLE" in ln for ln in shown.stderr.splitlines())


class _TableText(HTMLParser):
    """The text of every table of a page (its caption, headers and cells), a list of cells per table."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag in ("td", "th", "caption") and self.tables:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th", "caption") and self._cell is not None:
            text = "".join(self._cell).strip()
            if text:
                self.tables[-1].append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _flat(text: str) -> str:
    import unicodedata

    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))  # ligatures (fi) as letters; line breaks gone


def printed_text(exe: str, tmp_path: Path, page: Path) -> str:
    """``page`` printed to PDF by headless Chromium, as the PDF's text."""
    pypdf = pytest.importorskip("pypdf")
    pdf = tmp_path / f"{page.parent.name}.pdf"
    done = _chromium(exe, tmp_path, page, "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert done.returncode == 0 and pdf.exists(), done.stderr[-2000:]
    return " ".join(p.extract_text() for p in pypdf.PdfReader(pdf).pages)


def missing_from_print(exe: str, tmp_path: Path, page: Path) -> list[str]:
    """The table cells of ``page`` whose words are not in its printed PDF, in order (none when it prints whole)."""
    parser = _TableText()
    parser.feed(page.read_text())
    assert len(parser.tables) >= 3
    flat = _flat(printed_text(exe, tmp_path, page))
    return [cell for table in parser.tables for cell in table if not all(_flat(w) in flat for w in cell.split())]


def test_the_printed_report_holds_every_table(chromium, run_dir, tmp_path):
    page = run_dir / "report.html"
    assert "<details>" in page.read_text()  # the SSIM matrices, collapsed on screen
    assert missing_from_print(chromium, tmp_path, page) == []
    # the check can fail: without the print styles the collapsed SSIM matrices are not printed, nor the wide table's end
    from assocgan.report import html as report_html

    bare = tmp_path / "bare" / "report.html"
    bare.parent.mkdir()
    bare.write_text(page.read_text().replace(report_html.CSS[report_html.CSS.index("@media print") :], ""))
    missing = missing_from_print(chromium, tmp_path, bare)
    assert len(missing) >= 2 * 4, missing


def test_a_table_without_rows_renders_its_header():
    from assocgan.report.tables import Table

    text = to_text(Table("Shares of the gap", ["method", "share"], []))
    assert "method" in text and "share" in text
