"""What the command line shows: `run --help`, `methods`, and the summary in an 80-column terminal."""

from __future__ import annotations

import contextlib
import io

import pytest
from rich.console import Console

from assocgan.cli import build_parser, config_from_args, main
from assocgan.methods import METHODS
from assocgan.methods.base import SWITCH_SPELLINGS
from assocgan.report.tables import summary_table, to_rich


def _help(*argv: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*argv, "--help"]) == 0
    return buf.getvalue()


def test_run_help_has_readable_metavars_and_states_switch_spellings_once():
    text = _help("run")
    assert "OPT_" not in text and "N_TRAIN" not in text and "BATCH_SIZE" not in text
    assert "--heuristics on|off" in text and "--assoc-ratio" in text and "--mapper-steps N" in text and "--lr X" in text
    assert "--crop-border N" in text and "--eval-quantize on|off" in text
    assert " ".join(text.split()).count(" ".join(SWITCH_SPELLINGS.split())) == 1
    assert "(default True)" not in text and "(default on)" in text  # switches' defaults as they are typed


@pytest.mark.parametrize("given, want", [("yes", True), ("TRUE", True), ("1", True), ("off", False), ("no", False), ("false", False)])
def test_every_switch_takes_every_spelling(given, want):
    args = build_parser().parse_args(["run", "--amp", given, "--eval-quantize", given, "--heuristics", given, "--methods", "assoc"])
    args.argv = []
    cfg = config_from_args(args)
    assert cfg.amp == ("bf16" if want else "off") and cfg.eval_quantize is want and cfg.method_options["assoc"]["heuristics"] is want


def test_a_bad_switch_is_one_line_naming_it(tmp_path, capsys):
    assert main(["run", "--preset", "smoke", "--eval-quantize", "maybe", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--eval-quantize" in err[0] and "'maybe'" in err[0]


def test_methods_prints_each_title_once(capsys):
    assert main(["methods"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert len(lines) == len(METHODS)
    for line, m in zip(lines, METHODS.values()):
        rest = line[len(m.name) :].strip()
        assert rest.startswith(m.title) and not rest[len(m.title) :].lstrip(": ").startswith(m.title), line
    assert "(task id) (task id" not in summary_table(_all_methods()).rows[4][0]


def _all_methods(tl: float = 25.0, jl: float = 28.0) -> dict:
    methods = {}
    for i, (name, m) in enumerate(METHODS.items()):
        methods[name] = {
            "title": m.title,
            "task_id_at_test": m.needs_task_id,
            "complete": True,
            "matrix": [[19.0, 21.0, 21.0, 21.0]] * 4,
            "final_avg": 25.0 + 0.1 * i,
            "bwt": -1.234,
            "fwt": 0.125,
            "forgetting": 1.3,
            "memory_bytes": 123456789,
            "train_seconds": 1234.0,
            "train_cpu_seconds": 2345.0,
        }
    methods["tl"]["final_avg"], methods["jl"]["final_avg"] = tl, jl
    return {"benchmark": "restore4", "metric": "psnr", "tasks": ["a", "b", "c", "d"], "identity": {"psnr": [20.0] * 4}, "methods": methods}


def test_summary_in_80_columns_wraps_neither_names_nor_numbers():
    res = _all_methods()
    console = Console(width=80, record=True, force_terminal=False)
    console.print(to_rich(summary_table(res), console.width))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    for name in METHODS:
        row = next(line for line in lines if line.split() and line.split()[0] == name)
        assert "123.5 MB" in row and "-1.23" in row and "+0.12" in row and row.rstrip().endswith("T1"), row  # every cell, whole
    assert any("below" in line for line in lines) and any(line.startswith("do nothing") for line in lines)


def test_blank_gap_closed_is_explained():
    assert "gap closed is blank" not in summary_table(_all_methods()).note
    note = summary_table(_all_methods(tl=26.0, jl=25.5)).note
    assert "TL->JL gap closed is blank: JL does not end above TL" in note
    assert all(r[8] == "" for r in summary_table(_all_methods(tl=26.0, jl=25.5)).rows)
    res = _all_methods()
    del res["methods"]["jl"]
    assert "needs TL and JL both complete" in summary_table(res).note


def test_the_paper_protocol_preset_turns_on_the_adversarial_term_eq3_targets_and_the_distillation():
    """``--preset paper-quick``: the quick preset's sizes with the adversarial term, Assoc-GAN's association
    samples made from the current targets (eq. 3) and its distillation on; a flag still overrides the preset."""
    from assocgan.config import PRESETS

    def cfg_of(*flags):
        args = build_parser().parse_args(["run", "--methods", "tl,assoc,thanh", *flags])
        args.argv = []
        return config_from_args(args)

    paper, quick = cfg_of("--preset", "paper-quick"), cfg_of()
    assert paper.lambda_adv > 0 and quick.lambda_adv == 0
    assert (paper.size, paper.steps, paper.ngf) == (quick.size, quick.steps, quick.ngf) == (PRESETS["quick"]["size"], 600, 32)
    assert paper.method_options["assoc"]["assoc_target"] == "current" and paper.method_options["assoc"]["distill"] is True
    assert quick.method_options["assoc"]["assoc_target"] == "domain" and quick.method_options["assoc"]["distill"] is False
    assert cfg_of("--preset", "paper-quick", "--distill", "off").method_options["assoc"]["distill"] is False
    assert cfg_of("--preset", "paper-quick", "--lambda-adv", "0.01").lambda_adv == 0.01


def test_run_help_shows_the_values_each_preset_runs():
    """--help states each training setting's value in every preset and, first, in the preset the command line
    gives (else the default one): before, it showed 2e-4 / 0.5 / 1e-3 while the default preset runs 2e-3 / 0.9 / 0."""
    from assocgan.config import PRESETS, SETTINGS

    for given in ([], ["--preset", "smoke"], ["--preset=paper"]):
        active = given[-1].split("=")[-1] if given else "quick"
        text = " ".join(_help("run", *given).split())
        for flag, name in (("--lr X", "lr"), ("--beta1 X", "beta1"), ("--lambda-adv X", "lambda_adv"), ("--steps N", "steps")):
            part = text[text.index(flag + " ") :]
            part = part[part.index("(now") :]
            part = part[: part.index(")") + 1].replace("- ", "-")
            want = {p: values.get(name, SETTINGS[name].default) for p, values in PRESETS.items()}
            assert part.startswith(f"(now {want[active]:g} with --preset {active};"), (given, flag, part)
            for preset, value in want.items():
                assert f"{preset} {value:g}" in part, (flag, part)


def test_a_setting_is_declared_once_and_its_flag_check_and_help_follow():
    """Each run setting's flag, help, type and check come from its one declaration in RunConfig: every declared
    setting with a group has its flag, and the flag's value goes through the declaration's bounds."""
    from assocgan.config import GROUPS, SETTINGS, make_config
    from assocgan.errors import UserError

    text = _help("run")
    for name, option in SETTINGS.items():
        assert (option.flag + " " in text or option.flag + "\n" in text) is (GROUPS[name] is not None), name
    args = build_parser().parse_args(["run", "--steps", "7", "--context", "off", "--eval-space", "y", "--fresh-degradations"])
    args.argv = []
    cfg = config_from_args(args)
    assert (cfg.steps, cfg.context, cfg.eval_space, cfg.fresh_degradations) == (7, False, "y", True)
    with pytest.raises(UserError, match="--ngf 0: must be at least 1"):
        make_config(ngf=0)
    with pytest.raises(UserError, match=r"--crop-border -1: must be at least 0"):
        make_config(crop_border=-1)
    with pytest.raises(UserError, match="--gan-mode wgan: choose lsgan or vanilla"):
        make_config(gan_mode="wgan")
