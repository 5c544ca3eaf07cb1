"""`assocgan run --seeds`: one run folder per seed, combined into mean ± sd; the combination itself on hand-made
results; `assocgan report` and the tables of the combined folder."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest

from assocgan.cli import main
from assocgan.errors import UserError
from assocgan.report.tables import matrix_table, run_tables, summary_table, to_latex, to_markdown
from assocgan.seeds import combine, parse_seeds

SMOKE = ["--preset", "smoke", "--threads", "1", "--steps", "4"]


def _main(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(list(args))
    return code, buf.getvalue()


def _results(final: list[float], bwt: float, complete: bool = True, seed_shift: float = 0.0) -> dict:
    """A hand-made run of two tasks: matrix [[a], [b, c]]."""
    a, b, c = final[0] + 1, *final
    return {
        "benchmark": "toy",
        "metric": "psnr",
        "tasks": ["t1", "t2"],
        "task_descriptions": ["", ""],
        "identity": {"psnr": [20.0 + seed_shift, 21.0], "ssim": [0.5, 0.6]},
        "config": {"seed": 0, "steps": 1},
        "methods": {
            "tl": {
                "title": "TL",
                "complete": complete,
                "matrix": [[a, None], [b, c]],
                "psnr": [[a, None], [b, c]],
                "ssim": [[0.8, None], [0.7, 0.9]],
                "avg": [a, (b + c) / 2],
                "final_avg": (b + c) / 2,
                "bwt": bwt,
                "fwt": None,
                "forgetting": 1.0,
                "memory_bytes": 100,
                "train_seconds": 10.0,
                "train_cpu_seconds": 12.0,
                "memory_by_task": [50, 100],
                "train_seconds_by_task": [5.0, 5.0],
                "curve": [],
            }
        },
    }


def test_parse_seeds():
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "0,x", "1,1", "-1"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def test_combine_means_sds_and_per_seed_values():
    per_seed = {0: _results([30.0, 32.0], -1.0), 1: _results([31.0, 35.0], -3.0, seed_shift=2.0)}
    out = combine(per_seed)
    e = out["methods"]["tl"]
    assert out["seeds"] == [0, 1] and e["complete"]
    assert e["matrix"][1] == [30.5, 33.5] and e["matrix"][0][1] is None
    assert e["sd"]["matrix"][1][1] == pytest.approx(statistics.stdev([32.0, 35.0]))
    assert e["final_avg"] == pytest.approx((31.0 + 33.0) / 2)
    assert e["per_seed"]["final_avg"] == [31.0, 33.0] and e["per_seed"]["bwt"] == [-1.0, -3.0]
    assert e["sd"]["bwt"] == pytest.approx(statistics.stdev([-1.0, -3.0]))
    assert e["sd"]["fwt"] is None and e["fwt"] is None
    assert out["identity"]["psnr"] == [21.0, 21.0] and out["identity_sd"]["psnr"][0] == pytest.approx(statistics.stdev([20.0, 22.0]))


def test_combine_partial_seed_keeps_the_rows_all_seeds_have():
    partial = _results([31.0, 35.0], -3.0, complete=False)
    m = partial["methods"]["tl"]
    m["matrix"], m["psnr"], m["ssim"], m["avg"] = m["matrix"][:1], m["psnr"][:1], m["ssim"][:1], m["avg"][:1]
    out = combine({0: _results([30.0, 32.0], -1.0), 1: partial})
    e = out["methods"]["tl"]
    assert not e["complete"] and e["seeds_complete"] == 1 and len(e["matrix"]) == 1
    assert summary_table(out).rows[-1][0].startswith("TL (1/2 tasks")


def test_tables_show_mean_and_sd_in_every_renderer():
    out = combine({0: _results([30.0, 32.0], -1.0), 1: _results([31.0, 35.0], -3.0)})
    mt = matrix_table(out, "tl")
    assert mt.rows[1][2] == f"33.50 ± {statistics.stdev([32.0, 35.0]):.2f}"
    assert "Mean ± sd over 2 seeds (0, 1)" in mt.note
    st = summary_table(out)
    assert st.rows[-1][1] == f"32.00 ± {statistics.stdev([31.0, 33.0]):.2f}"
    assert st.rows[-1][2] == "-2.00 ± 1.41"
    tables = run_tables(out)
    assert tables[-1].title.startswith("Per seed") and tables[-1].rows[0][2:] == ["31.00", "33.00", "32.00 ± 1.41"]
    assert "33.50 ± 2.12" in to_markdown(mt) and "33.50 ± 2.12" in to_latex(mt)


def test_run_with_seeds_end_to_end(tmp_path):
    out = tmp_path / "multi"
    code, printed = _main("run", *SMOKE, "--methods", "tl", "--seeds", "0,1", "--out", str(out))
    assert code == 0, printed
    for s in (0, 1):
        seed_res = json.loads((out / f"seed{s}" / "results.json").read_text())
        assert seed_res["config"]["seed"] == s and seed_res["methods"]["tl"]["complete"]
    combined = json.loads((out / "results.json").read_text())
    per = [json.loads((out / f"seed{s}" / "results.json").read_text())["methods"]["tl"]["final_avg"] for s in (0, 1)]
    assert combined["seeds"] == [0, 1]
    assert combined["methods"]["tl"]["per_seed"]["final_avg"] == per
    assert combined["methods"]["tl"]["final_avg"] == pytest.approx(statistics.fmean(per))
    assert per[0] != per[1]  # the seeds differ: a spread to show
    assert "±" in printed and (out / "report.html").exists()
    page = (out / "report.html").read_text()
    assert "Per seed" in page and "seeds 0, 1" in page and "±" in page
    assert "from seed0" in page  # sample grids from a seed's folder
    # a rerun resumes: nothing is trained again, the combination is the same
    code, printed = _main("run", *SMOKE, "--methods", "tl", "--seeds", "0,1", "--out", str(out))
    assert code == 0 and printed.count("tl: complete in") == 2, printed
    assert json.loads((out / "results.json").read_text())["methods"]["tl"]["final_avg"] == combined["methods"]["tl"]["final_avg"]
    # the report of the combined folder, as Markdown
    code, md = _main("report", str(out), "--markdown")
    assert code == 0 and "| T1 noise |" in md and "±" in md
    # a single-seed run into the combined folder is refused, and --seed with --seeds
    code, printed = _main("run", *SMOKE, "--methods", "tl", "--out", str(out))
    assert code == 2 and "combined results of seeds 0, 1" in printed
    code, printed = _main("run", *SMOKE, "--methods", "tl", "--seed", "3", "--seeds", "0,1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--seed: not with --seeds" in printed


def test_seeds_refuse_a_single_run_folder(tmp_path):
    out = tmp_path / "single"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(_results([30.0, 32.0], -1.0)))
    code, printed = _main("run", *SMOKE, "--methods", "tl", "--seeds", "0,1", "--out", str(out))
    assert code == 2 and "holds a run of one seed" in printed
