"""What a careless or hostile user can do to a run folder without noticing: each case is refused with one line
naming the option, or leaves alone what is not the run's, and nothing already computed is lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assocgan.cli import main
from assocgan.io import PARTIAL, atomic_write, is_partial_file

TINY = [
    "--preset",
    "smoke",
    "--threads",
    "1",
    "--steps",
    "1",
    "--size",
    "16",
    "--n-train",
    "4",
    "--n-test",
    "2",
    "--batch-size",
    "2",
    "--ngf",
    "4",
    "--ndf",
    "4",
]


def _cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("assocgan: error: ")
    return lines[0]


def _pairs(root: Path, task: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", 3), ("test", 2)):
        for side in ("A", "B"):
            d = root / task / split / side
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"p{i}.png")


def test_another_metric_into_a_finished_folder_is_refused_and_the_tables_stay_in_one_unit(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *TINY, "--methods", "tl", "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    code, err = _cli(capsys, "run", *TINY, "--methods", "tl,jl", "--metric", "ssim", "--out", str(out))
    assert code == 2
    line = _one_line(err)
    assert "--metric" in line and "PSNR" in line and "results.json" in line
    assert (out / "results.json").read_bytes() == before
    # the same metric adds a method
    assert main(["run", *TINY, "--methods", "tl,jl", "--metric", "psnr", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["metric"] == "psnr" and set(res["methods"]) == {"tl", "jl"}


def test_other_data_of_the_same_folder_name_into_a_finished_folder_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a" / "good", tmp_path / "b" / "good"
    _pairs(a, "t1", 0)
    _pairs(b, "t1", 1)
    out = tmp_path / "r"
    flags = TINY[: TINY.index("--n-train")] + TINY[TINY.index("--batch-size") :]  # the folders hold the pairs
    assert main(["run", *flags, "--data", str(a), "--methods", "tl", "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    code, err = _cli(capsys, "run", *flags, "--data", str(b), "--methods", "tl,jl", "--out", str(out))
    assert code == 2
    line = _one_line(err)
    assert "--data" in line and str(b) in line
    assert (out / "results.json").read_bytes() == before
    assert main(["run", *flags, "--data", str(a), "--methods", "tl,jl", "--out", str(out)]) == 0  # the same data goes on


def test_a_run_removes_only_the_half_written_files_it_names_itself(tmp_path):
    out = tmp_path / "r"
    (out / "notes").mkdir(parents=True)
    mine = out / "checkpoints" / "tl"
    mine.mkdir(parents=True)
    theirs = [out / ".draft.partial-keep.txt", out / "notes" / f".x{PARTIAL}abcdefgh.txt", out / ".plan.partial-1"]
    for p in theirs:
        p.write_text("a user's file")
    left = mine / f".task1_a.safetensors{PARTIAL}ab_cd123.safetensors"  # as a killed atomic_write leaves it
    left.write_bytes(b"half")
    assert is_partial_file(left) and not any(is_partial_file(p) for p in theirs[:1] + theirs[2:])
    assert main(["run", *TINY, "--methods", "tl", "--out", str(out)]) == 0
    assert not left.exists()
    assert all(p.read_text() == "a user's file" for p in theirs)


def test_atomic_write_names_its_files_as_the_cleanup_recognises_them(tmp_path, monkeypatch):
    seen = []

    def write(p: Path):
        seen.append(p)
        p.write_text("x")

    atomic_write(tmp_path / "results.json", write)
    atomic_write(tmp_path / "log", write)
    assert all(is_partial_file(p) for p in seen)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["run", "--methods", ""], "--methods: give at least one method"),
        (["study", "quota", "--methods", ""], "--methods: give at least one method"),
        (["study", "lambda", "--values", ""], "--values: give at least one value"),
        (["study", "lambda", "--method", ""], "--methods: give at least one method"),
        (["run", "--methods", "replay", "--quota", "1.5"], "--quota 1.5: from 1 on it is a count of pairs"),
    ],
)
def test_an_empty_list_or_a_fractional_count_is_refused_not_replaced(tmp_path, capsys, argv, named):
    code, err = _cli(capsys, *argv, *TINY, "--out", str(tmp_path / "o"))
    assert code == 2 and named in _one_line(err)
    assert not (tmp_path / "o").exists()


def test_report_on_a_folder_of_seeds_leaves_out_a_seed_whose_results_are_gone(tmp_path, capsys):
    import shutil

    out = tmp_path / "r"
    assert main(["run", *TINY, "--methods", "tl", "--seeds", "0,1", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["seeds"] == [0, 1]
    shutil.rmtree(out / "seed1")
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "seed1" in err and "left out" in err
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0]
    one = json.loads((out / "seed0" / "results.json").read_text())
    assert res["methods"]["tl"]["final_avg"] == pytest.approx(one["methods"]["tl"]["final_avg"])


def test_a_file_that_cannot_be_written_is_named_in_one_line(capsys):
    """A read-only --out or a full disk (here raised as the system raises it: an OSError with the file's name)
    ends the command with exit 2 and one line naming the file, not a traceback; an OSError without a file is
    a bug and still raises."""
    from assocgan.errors import exit_code

    def write_into_read_only():
        raise PermissionError(13, "Permission denied", "/data/readonly/report.html")

    assert exit_code(write_into_read_only) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("assocgan: error: /data/readonly/report.html: Permission denied"), err
    with pytest.raises(OSError):
        exit_code(lambda: (_ for _ in ()).throw(OSError("no file")))


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path):
    """`assocgan methods | head -3`: the reader closes the pipe; the command ends without a traceback."""
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m assocgan methods | head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
