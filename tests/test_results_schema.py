"""results.json's layout (``assocgan.results``): a file written before the layout carried a version (a smoke run
of restore4 with tl and jl, saved as it was) still loads, round-trips through ``Results`` and is reported on;
a new run's file carries ``SCHEMA_VERSION``; one of a later version is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from assocgan.errors import UserError
from assocgan.results import SCHEMA_VERSION, VERSION, MethodEntry, Results, version_problem
from assocgan.runfolder import RunFolder, results_problem

OLD = Path(__file__).parent / "data" / "results_unversioned_smoke.json"


def test_an_unversioned_results_json_loads_and_round_trips():
    d = json.loads(OLD.read_text())
    assert VERSION not in d and results_problem(d) is None
    res = Results.from_json(d)
    assert res.schema_version == 0 and list(res.methods) == ["tl", "jl"]
    tl = res.methods["tl"]
    assert tl.complete and tl.matrix == d["methods"]["tl"]["matrix"] == tl.scores["psnr"]
    assert set(tl.scores) == {"psnr", "ssim"} and tl.extra == {} and res.extra == {}
    back = res.to_json()
    assert back.pop(VERSION) == 0 and back == d
    assert list(back["methods"]["tl"]) == list(d["methods"]["tl"])  # the keys in the order written


def test_entries_keep_what_they_do_not_model():
    e = {"matrix": [[1.0]], "complete": True, "psnr": [[1.0]], "ssim": [[0.5]], "sd": {"matrix": [[None]]}, "from_later": 3}
    back = MethodEntry.from_json(e).to_json()
    assert back["from_later"] == 3 and back["sd"] == e["sd"] and "failed" not in back and "initial" not in back


def test_a_later_version_is_refused(tmp_path):
    d = json.loads(OLD.read_text())
    assert version_problem({**d, VERSION: SCHEMA_VERSION}) is None
    (tmp_path / "results.json").write_text(json.dumps({**d, VERSION: SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="newer assocgan"):
        RunFolder(tmp_path).read_results()


def test_report_on_an_old_run_folder(tmp_path):
    from assocgan.report.html import write_report

    shutil.copy(OLD, tmp_path / "results.json")
    page = write_report(tmp_path).read_text()
    assert "Summary: restore4" in page and (tmp_path / "plots" / "forgetting.png").exists()
