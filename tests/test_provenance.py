"""Who made a run and how to make it again: provenance in results.json, log.txt and the report; ``--config``
replays an earlier run's settings; ``--version``."""

from __future__ import annotations

import contextlib
import io
import json

import torch

import assocgan
from assocgan.cli import main

SMOKE = ["run", "--preset", "smoke", "--threads", "1"]


def _main(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(argv))
    return code, buf.getvalue()


def test_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"assocgan {assocgan.__version__}"


def test_provenance_log_and_config_replay(tmp_path):
    first = tmp_path / "first"
    code, _ = _main(*SMOKE, "--steps", "3", "--lr", "1e-3", "--order", "blur,noise", "--methods", "tl,replay", "--quota", "0.5", "--out", str(first))
    assert code == 0
    res = json.loads((first / "results.json").read_text())
    (prov,) = res["provenance"]
    assert prov["command"].startswith("assocgan run --preset smoke") and "--quota 0.5" in prov["command"]
    assert prov["torch"] == torch.__version__ and prov["assocgan"] == assocgan.__version__ and prov["device"] == "cpu"
    assert prov["date"][:4].isdigit() and prov["python"].count(".") == 2
    report = (first / "report.html").read_text()
    assert "Made by" in report and prov["command"] in report.replace("&#x27;", "'")
    log = (first / "log.txt").read_text().splitlines()
    assert "start: assocgan run" in log[0] and "left out: impulse, oversharpen" in log[1] and "tl: task 1/2 blur done" in log[2] and log[-1].endswith("end")

    again = tmp_path / "again"
    code, _ = _main("run", "--config", str(first), "--seed", "1", "--methods", "replay", "--out", str(again))
    assert code == 0
    cfg_a, cfg_b = res["config"], json.loads((again / "results.json").read_text())["config"]
    assert {k for k in cfg_a if cfg_a[k] != cfg_b[k]} == {"seed", "methods", "method_options"}
    assert cfg_b["lr"] == 1e-3 and cfg_b["steps"] == 3 and cfg_b["order"] == "blur,noise" and cfg_b["size"] == 32
    assert cfg_b["method_options"]["replay"]["quota"] == 0.5  # the earlier run's method options too


def test_config_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "x.json").write_text('{"config": 3}')
    for path, message in ((tmp_path / "x.json", "holds no run configuration"), (tmp_path / "none", "not found")):
        assert main([*SMOKE, "--config", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    (tmp_path / "y.json").write_text('{"config": {"methods": ["tl"]}}')
    assert main(["run", "--config", str(tmp_path / "y.json"), "--preset", "smoke", "--out", str(tmp_path / "r")]) == 2
    assert "--preset: not with --config" in capsys.readouterr().err
