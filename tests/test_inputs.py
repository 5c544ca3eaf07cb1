"""Input defects: unusual image files read right (16-bit, EXIF orientation, transparency, macOS litter), and bad
files and options refused with one line naming them, exit code 2, before anything is trained."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from assocgan.cli import main
from assocgan.data.benchmarks import load_benchmark
from assocgan.data.folders import read_image
from assocgan.errors import UserError

S = 16
SMOKE = ["run", "--preset", "smoke", "--threads", "1", "--steps", "2"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _raw_png(path: Path, width: int, height: int, bit_depth: int, colour: int, rows: bytes) -> Path:
    """A PNG written byte by byte (Pillow cannot write 48-bit colour, nor lie about its size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    return path


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert read_image(tmp_path / "grey16.png")[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    rgb = np.array([[[65535, 0, 257 * 10], [257 * 200, 257 * 100, 0]]], dtype=">u2")  # one row, two pixels, 16 bits a colour
    _raw_png(tmp_path / "rgb48.png", 2, 1, 16, 2, b"\x00" + rgb.tobytes())
    assert read_image(tmp_path / "rgb48.png")[0].tolist() == [[255, 0, 10], [200, 100, 0]]


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = [255, 0, 0]  # top left is red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "turned.png", exif=exif)
    got = read_image(tmp_path / "turned.png")
    assert got.shape == (3, 2, 3)
    assert got[0, 1].tolist() == [255, 0, 0]  # the red corner is now top right


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [200, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    got = read_image(tmp_path / "alpha.png")[0]
    assert got[0].tolist() == [255, 255, 255] and got[1].tolist() == [0, 0, 0]
    assert abs(int(got[2, 0]) - 227) <= 1 and abs(int(got[2, 1]) - 127) <= 1  # 200 * a + 255 * (1 - a), a = 128/255


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    """Files of a few bytes that claim billions of pixels: refused from their header, nothing decoded."""
    with pytest.raises(UserError, match="big.png: 9000x9000 pixels is more than the 64 megapixels"):
        read_image(_raw_png(tmp_path / "big.png", 9000, 9000, 1, 0, b"\x00" * 10))
    with pytest.raises(UserError, match="bomb.png: refused as a decompression bomb"):
        read_image(_raw_png(tmp_path / "bomb.png", 100_000, 100_000, 1, 0, b"\x00" * 10))


def _pairs(root: Path, task: str, n: int = 2) -> None:
    rng = np.random.default_rng(len(task))
    for split in ("train", "test"):
        for side in ("A", "B"):
            (root / task / split / side).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / task / split / "A" / f"{i}.png")
            Image.fromarray(255 - a).save(root / task / split / "B" / f"{i}.png")


def test_macos_litter_is_ignored(tmp_path):
    root = tmp_path / "data"
    _pairs(root, "t1")
    (root / "__MACOSX" / "t1" / "train" / "A").mkdir(parents=True)
    for junk in (root / "t1" / "train" / "A" / "._0.png", root / "__MACOSX" / "t1" / "train" / "A" / "._0.png", root / "t1" / "test" / "B" / ".hidden.png"):
        junk.write_bytes(b"\x00\x05\x16\x07 not an image")
    bench = load_benchmark(data=root, size=S)
    assert bench.task_names == ["t1"] and bench.tasks[0].n_train == 2


def test_long_task_names_are_refused_before_training(tmp_path):
    root = tmp_path / "data"
    _pairs(root, "x" * 230)
    with pytest.raises(UserError, match="too long for the file names"):
        load_benchmark(data=root, size=S)


def _refused(tmp_path: Path, capsys, argv: list[str], message: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("assocgan: error: ") and message in err, err
    return err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "--lr nan: must be a finite number"),
        (["--lr", "-1"], "--lr -1: must be above 0"),
        (["--lambda-adv", "inf"], "--lambda-adv inf: must be a finite number"),
        (["--beta1", "1"], "--beta1 1: must be in [0, 1)"),
        (["--steps", "-3"], "--steps -3: must be 1 to 10,000,000"),
        (["--threads", "-1"], "--threads -1: must be 0 (all cores) to 1,024"),
        (["--threads", "100000"], "--threads 100000"),
        (["--checkpoint-every", "-1"], "--checkpoint-every -1"),
        (["--methods", "tl,replay", "--quota", "nan"], "--quota nan: must be a finite number"),
        (["--methods", "tl,assoc", "--fisher-samples", "-1"], "--fisher-samples -1: must be at least 1"),
        (["--methods", "tl,liss", "--liss-ema", "2"], "--liss-ema 2: must be in (0, 1]"),
        (["--methods", "tl,replay", "--quota", "0.01"], "--quota 0.01: keeps no pair of task noise's 16 training pairs"),
        (["--methods", "tl,replay", "--replay-bytes", "10"], "--replay-bytes 10: too small"),
        (["--methods", "tl,lifelonggan", "--lifelonggan-aux", "montage,nope"], "--lifelonggan-aux"),
        (["--device", "nonsense"], "--device 'nonsense': not a torch device"),
    ],
)
def test_bad_options_are_refused_before_training(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    _refused(tmp_path, capsys, [*SMOKE, *flags, "--out", str(out)], message)
    assert not (out / "checkpoints").exists()  # nothing was trained, not even tl


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, capsys):
    _refused(tmp_path, capsys, [*SMOKE, "--device", "cuda", "--out", str(tmp_path / "r")], "--device cuda: this torch has no CUDA device")


def test_data_options_that_would_be_ignored_are_refused(tmp_path, capsys):
    root = tmp_path / "data"
    _pairs(root, "t1")
    clean = tmp_path / "clean"
    for flags, message in (
        (["--data", str(root), "--clean-images", str(clean), "--recipe", "blur:1"], "--recipe: not with --data"),
        (["--data", str(root), "--clean-images", str(clean)], "--data and --clean-images: give one of them"),
        (["--data", str(root), "--n-train", "5"], "--n-train: not with --data"),
        (["--data", str(root), "--n-test", "5"], "--n-test: not with --data"),
        (["--data", str(root), "--benchmark", "tones3"], "--benchmark: not with --data"),
        (["--clean-images", str(clean), "--recipe", "blur:1", "--benchmark", "tones3"], "--benchmark: not with --clean-images"),
    ):
        _refused(tmp_path, capsys, [*SMOKE, *flags, "--out", str(tmp_path / "r")], message)


def test_an_order_naming_some_tasks_says_so(tmp_path):
    out = tmp_path / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*SMOKE, "--methods", "tl", "--order", "blur,noise", "--out", str(out)])
    assert code == 0
    assert "--order blur,noise: runs 2 of the 4 tasks; left out: impulse, oversharpen" in buf.getvalue()
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"] == ["blur", "noise"] and res["tasks_left_out"] == ["impulse", "oversharpen"]


def test_out_that_is_not_a_writable_folder(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    _refused(tmp_path, capsys, [*SMOKE, "--out", str(a_file)], f"--out {a_file}: is a file, not a folder")
    _refused(tmp_path, capsys, [*SMOKE, "--out", str(a_file / "below")], f"--out {a_file / 'below'}: cannot create the folder")
    assert a_file.read_text() == "keep me"
    if os.geteuid() != 0:  # the superuser writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        _refused(tmp_path, capsys, [*SMOKE, "--out", str(locked)], "is not writable")


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "a JSON list, not an object"),
        ('{"benchmark": "restore4"}', "'metric' is missing"),
        (
            '{"benchmark": "restore4", "metric": "psnr", "tasks": ["a"], "methods": {"tl": {"matrix": [["x"]]}}}',
            "is not the scores of the 1 tasks trained by then",
        ),
        ("{not json", "not valid JSON"),
        ('{"benchmark": "b", "metric": "psnr", "tasks": ["a", "b"], "methods": {"tl": {"matrix": [[null, null], [1, 2]]}}}', "row 1 of method 'tl'"),
        ('{"benchmark": "b", "metric": "psnr", "tasks": ["a"], "methods": {"tl": {"matrix": [[1], [1, 2]]}}}', "has 2 rows for 1 tasks"),
        ('{"benchmark": "b", "metric": "psnr", "tasks": ["a"], "methods": {"tl": {"matrix": [[1' + "0" * 400 + "]]}}}", "row 1 of method 'tl'"),
        ('{"benchmark": "b", "metric": "psnr", "tasks": ["a"], "identity": {"psnr": [null]}, "methods": {}}', "'identity'"),
        ('{"benchmark": "b", "deep": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
    ],
)
def test_bad_results_json_is_refused_and_kept(tmp_path, capsys, content, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(content)
    _refused(tmp_path, capsys, [*SMOKE, "--out", str(out)], message)
    assert (out / "results.json").read_text() == content
    _refused(tmp_path, capsys, ["report", str(out)], "results.json")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "--seed -1: must be 0 to 4,294,967,295"),
        (["--seed", "1" + "0" * 20], "must be 0 to 4,294,967,295"),
        (["--seeds", "1" + "0" * 20], "is not 0 to 4294967295"),
        (["--size", "100000"], "--size 100000: must be 16 to 8,192"),
        (["--size", "1024"], "--size 1024: larger than the built-in photos"),
        (["--steps", "1" + "0" * 20], "must be 1 to 10,000,000"),
        (["--n-train", "100000000"], "--n-train 100000000: one task's"),
        (["--ngf", "100000"], "--ngf 100000: the generator would have"),
        (["--methods", "lifelonggan", "--lifelonggan-grid", "1000"], "--lifelonggan-grid 1000: the montage's patches"),
    ],
)
def test_out_of_range_settings_are_one_line_before_anything_is_made(tmp_path, capsys, flags, message):
    out = tmp_path / "o"
    _refused(tmp_path, capsys, ["run", "--preset", "smoke", "--threads", "1", "--size", "16", "--n-test", "2", *flags, "--out", str(out)], message)
    assert not (out / "results.json").exists()


def test_a_damaged_study_record_is_one_line(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    for content, message in (
        ('{"study": "quota", "runs": [', "not valid JSON"),
        ('{"study": "quota"}', "'runs' is not a list"),
        ('{"study": "nope", "runs": []}', "'study' is 'nope'"),
        ('{"study": "lambda", "runs": [{"name": "a"}]}', "damaged (KeyError"),
        ('{"study": "quota", "runs": [{"name": "../x"}]}', "'runs' is not a list"),
    ):
        (folder / "study.json").write_text(content)
        _refused(tmp_path, capsys, ["report", str(folder)], message)
        assert (folder / "study.json").read_text() == content


def test_the_votes_server_refuses_a_bad_port_and_a_damaged_database_in_one_line(tmp_path, capsys):
    from assocgan.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "run",
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
                "--methods",
                "tl,jl",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    for port in ("-1", "70000"):
        _refused(tmp_path, capsys, ["study", "perceptual", str(run), "--groups", "2", "--port", port], f"--port {port}: must be 0")
    (run / "perceptual").mkdir(exist_ok=True)
    (run / "perceptual" / "votes.sqlite").write_text("not a database")
    _refused(tmp_path, capsys, ["study", "perceptual", str(run), "--groups", "2", "--port", "0"], "not a votes database")
    assert (run / "perceptual" / "votes.sqlite").read_text() == "not a database"


def test_an_argument_error_is_one_line_not_the_usage(capsys):
    assert main(["run", "--steps", "many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "assocgan run: error: argument --steps: invalid int value: 'many' (see assocgan run --help)"
