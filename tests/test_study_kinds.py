"""A kind of study is one file of ``assocgan.studies``: a toy kind, written as such a file, is found like the
paper's kinds, gets its own ``assocgan study`` subcommand and arguments, runs, and its table and figure land in the
study's report.html."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from assocgan import studies
from assocgan.cli import main
from test_studies import TINY_ARGS, quiet

TOY = '''
"""``toy``: one run of TL, its final average as a table and as a bar."""
from ..report.plots import new_figure
from ..report.tables import Table, fmt_metric
from ..results import FINAL_AVG
from .base import Plot, RunSpec, StudyKind, variant


def toy_figure(summary):
    fig = new_figure(3.0, 2.0)
    fig.subplots().bar([0], [summary["final"]])
    return fig


class ToyStudy(StudyKind):
    name = "toy"
    help = "one TL run as a table and a bar"
    description = "A toy kind of study: one run of TL."
    plots = (Plot("toybar", "Toy figure: the final average of the run as a bar.", toy_figure),)

    def add_arguments(self, group):
        group.add_argument("--label", default="a toy run", help="the label of the run")

    def base_methods(self, args):
        return "tl"

    def options(self, args, cfg):
        return {"label": args.label}

    def runs(self, base, names, label="a toy run"):
        return [RunSpec("only", label, variant(base, ["tl"]), how="tl", meta={"method": "tl"})], {"label": label}

    def collect(self, study, found, tasks):
        results, entry = found["only"]
        return {"final": entry.get(FINAL_AVG) if entry else None}

    def tables(self, summary):
        return [Table("Toy table", ["run", "final AVG"], [["only", fmt_metric(summary["final"], summary["metric"])]])]
'''


@pytest.fixture
def toy_kind(tmp_path, monkeypatch):
    """The registry found again with the toy kind's file beside the package's own."""
    folder = tmp_path / "kinds"
    folder.mkdir()
    (folder / "toy.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(studies, "__path__", [*studies.__path__, str(folder)])
    monkeypatch.setattr(studies, "STUDIES", studies._discover())
    yield studies.STUDIES["toy"]
    sys.modules.pop("assocgan.studies.toy", None)
    if hasattr(studies, "toy"):
        delattr(studies, "toy")


def test_a_kind_of_study_is_one_file(toy_kind, tmp_path, capsys):
    assert list(studies.STUDIES)[:5] == ["quota", "order", "lambda", "ablation", "perceptual"] and list(studies.STUDIES)[5:] == ["toy"]
    assert main(["study", "--help"]) == 0
    assert "toy" in capsys.readouterr().out
    assert main(["study", "toy", "--help"]) == 0
    assert "--label" in capsys.readouterr().out

    out = tmp_path / "study"
    code, printed = quiet(main, ["study", "toy", *TINY_ARGS, "--label", "mine", "--out", str(out)])
    assert code == 0, printed
    assert "Toy table" in printed
    study = json.loads((out / "study.json").read_text())
    assert study["study"] == "toy" and study["params"]["label"] == "mine" and study["runs"][0]["label"] == "mine"
    assert study["summary"]["final"] == json.loads((out / "runs" / "only" / "results.json").read_text())["methods"]["tl"]["final_avg"]
    assert (out / "plots" / "toybar.png").exists()
    page = (out / "report.html").read_text()
    assert "A toy kind of study: one run of TL." in page
    assert "<caption>Toy table</caption>" in page and f"<td>{study['summary']['final']:.2f}</td>" in page
    assert 'alt="toybar"' in page and "Toy figure: the final average of the run as a bar." in page

    (out / "report.html").unlink()
    assert quiet(main, ["report", str(out)])[0] == 0  # the report command knows the kind too
    assert "<caption>Toy table</caption>" in (out / "report.html").read_text()
