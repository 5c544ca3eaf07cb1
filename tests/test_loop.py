"""The training loop's machinery for speed: batches made ahead in a background thread (the same batches, drawn
in the same order, as made in turn), losses checked for finiteness in bulk, and the --amp setting."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config, upgrade_saved
from assocgan.data.benchmarks import Benchmark
from assocgan.errors import UserError
from assocgan.feed import BatchFeed
from assocgan.methods import METHODS
from assocgan.methods.assoc import AssocGAN
from assocgan.methods.tl import TL
from assocgan.runfolder import RunFolder
from assocgan.runner import benchmark_for
from assocgan.train import LossWatch, train_method


def _spy(base: type, ahead: bool) -> type:
    """``base`` recording each batch it makes, and the thread that made it; batches made ahead or not."""

    class Spy(base):
        name = f"{base.name}-spy-{'ahead' if ahead else 'inturn'}"
        batch_ahead = ahead

        def __init__(self, ctx, **opts):
            super().__init__(ctx, **opts)
            self.made: list[tuple[str, torch.Tensor]] = []

        def batch(self, t, task):
            b = super().batch(t, task)
            self.made.append((threading.current_thread().name, b.x.clone()))
            return b

    return Spy


@pytest.mark.parametrize("base, fresh", [(TL, False), (TL, True), (AssocGAN, False)])
def test_batches_made_ahead_train_exactly_as_batches_made_in_turn(monkeypatch, base, fresh):
    cfg = make_config("smoke", steps=6, checkpoint_every=4, fresh_degradations=fresh, lambda_adv=1e-3, method_options={"assoc": {"mapper_steps": 3}})
    bench = benchmark_for(cfg)
    bench = Benchmark(bench.name, bench.metric, bench.tasks[:2])
    out = {}
    for ahead in (True, False):
        spy = _spy(base, ahead)
        monkeypatch.setitem(METHODS, spy.name, spy)
        opts = {spy.name: cfg.method_options.get(base.name, {})}
        run_cfg = make_config("smoke", **{**cfg.to_dict(), "methods": [spy.name], "method_options": opts})
        states = []  # the random stream where each saved state holds it (every 4 steps and after each task)
        recs = train_method(spy.name, bench, run_cfg, on_state=lambda st: states.append((st["task"], st["step"], st["rng"]["gen"].clone())))
        out[ahead] = (recs[-1].method.made, recs[-1].generator.state_dict(), states, [r.losses for r in recs])
    made_ahead, made_in_turn = out[True][0], out[False][0]
    assert {name for name, _ in made_ahead} == {"assocgan-batches"}  # made by the feed's thread...
    assert {name for name, _ in made_in_turn} == {threading.current_thread().name}  # ...or by the loop itself
    assert len(made_ahead) == len(made_in_turn) == 2 * cfg.steps
    for (_, a), (_, b) in zip(made_ahead, made_in_turn):
        assert torch.equal(a, b)
    for k, v in out[True][1].items():
        assert torch.equal(v, out[False][1][k]), k
    assert [(t, s) for t, s, _ in out[True][2]] == [(0, 4), (1, 0), (1, 4)]
    for (_, _, a), (_, _, b) in zip(out[True][2], out[False][2]):
        assert torch.equal(a, b)  # a thread ahead of the loop has not drawn past a saved state
    assert out[True][3] == out[False][3]


def test_the_feed_hands_out_batches_in_order_and_raises_the_makers_error():
    made = iter(range(100))
    feed = BatchFeed(lambda: next(made), torch.device("cpu"))
    feed.start(5)
    assert [feed.next() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="no batch left"):
        feed.next()

    def failing():
        raise UserError("--x: bad")

    feed = BatchFeed(failing, torch.device("cpu"))
    feed.start(3)
    with pytest.raises(UserError, match="--x: bad"):
        feed.next()


def test_the_feed_stops_its_thread_when_closed_early():
    calls = []
    feed = BatchFeed(lambda: calls.append(1) or len(calls), torch.device("cpu"), depth=1)
    feed.start(1000)
    assert feed.next() == 1
    feed.close()
    assert not any(th.name == "assocgan-batches" for th in threading.enumerate())
    assert len(calls) < 10  # it made no more than the queue holds ahead


def test_a_deferred_check_names_the_first_non_finite_loss():
    raised = lambda step, what: ValueError(f"step {step}: {what}")
    watch = LossWatch(False, raised)
    for s, v in enumerate([1.0, 2.0, float("nan"), float("inf")], start=1):
        watch.add(s, "generator", torch.tensor(v))  # nothing is checked yet
    with pytest.raises(ValueError, match="step 3: the generator's loss is nan"):
        watch.check()
    watch.add(5, "discriminator", torch.tensor(0.5))
    watch.check()  # the failed ones are gone; a finite one passes
    with pytest.raises(ValueError, match="step 6: the discriminator's loss is inf"):
        LossWatch(True, raised).add(6, "discriminator", torch.tensor(float("inf")))  # at once when immediate


def test_amp_fp16_on_a_cpu_is_refused_naming_the_option(tmp_path, capsys):
    cfg = make_config("smoke", amp="fp16", methods=["tl"])
    with pytest.raises(UserError, match="--amp fp16: .*needs a CUDA device"):
        train_method("tl", benchmark_for(cfg), cfg, device=torch.device("cpu"))
    code = main(["run", "--preset", "smoke", "--methods", "tl", "--amp", "fp16", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert code == 2 and "--amp fp16" in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.json").exists()
    code = main(["run", "--preset", "smoke", "--methods", "tl", "--amp", "fp32", "--out", str(tmp_path / "r")])
    assert code == 2 and "--amp fp32: choose bf16, fp16 or off" in capsys.readouterr().err


def test_configurations_saved_with_amp_as_a_switch_still_load():
    assert make_config("smoke", base={**make_config("smoke").to_dict(), "amp": True}).amp == "bf16"
    assert make_config("smoke", base={**make_config("smoke").to_dict(), "amp": False}).amp == "off"
    assert upgrade_saved({"amp": True, "size": 32}) == {"amp": "bf16", "size": 32, "metrics": "psnr,ssim"}  # and what it meant by later settings


def test_a_run_folder_saved_with_amp_true_takes_a_bf16_run_and_refuses_an_off_one(tmp_path):
    cfg = make_config("smoke", amp="bf16")
    old = {**cfg.to_dict(), "amp": True}  # results.json written when --amp was a switch
    folder = RunFolder(tmp_path)
    folder.check_settings({"config": old}, cfg)
    with pytest.raises(UserError, match="amp 'bf16' -> 'off'"):
        folder.check_settings({"config": old}, make_config("smoke", amp="off"))
    json.dumps(cfg.to_dict())  # the new value is plain JSON


def test_the_step_speed_benchmark_prints_every_figure_and_the_targets(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step_speed.py"
    spec = importlib.util.spec_from_file_location("step_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        assert (
            module.main(
                [
                    "--sizes",
                    "32",
                    "--dtypes",
                    "fp32,bf16",
                    "--archs",
                    "pix2pix,gated",
                    "--steps",
                    "1",
                    "--warmup",
                    "1",
                    "--blocks",
                    "1",
                    "--batch",
                    "2",
                    "--threads",
                    "1",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("device: cpu")
    rows = [line.split() for line in out if line.split()[1:3] in (["32", "fp32"], ["32", "bf16"])]
    assert [(r[0], r[2]) for r in rows] == [("pix2pix", "fp32"), ("gated", "fp32"), ("pix2pix", "bf16"), ("gated", "bf16")]
    for r in rows:
        flops, peak, achieved = float(r[4]), float(r[5]), float(r[6])
        assert flops > 0 and 0 < achieved and peak > 0
        assert float(r[10]) == pytest.approx(float(r[9]) / float(r[8]), rel=0.01)  # loop/ref is the ratio of the two
    assert rows[0][-1].endswith("%")  # the first architecture's fp32 row: no ratio
    assert rows[2][-1].endswith("x")  # bf16 against fp32 at the same size
    assert rows[3][-2].endswith("x") and rows[3][-1].endswith("x")  # ... and the step time against the first architecture's
    for first, other in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert float(other[-1][:-1]) == pytest.approx(float(first[9]) / float(other[9]), abs=0.011)
    assert out[-1].startswith("targets: loop >= 0.95 x reference") and out[-1].endswith("at 128 px and above: not measured")
