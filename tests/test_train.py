"""The one training loop (assocgan.train): the content loss it optimises is eq. 3's weighted sum of the batch's
per-sample errors, and its default bf16 autocast path trains."""

from __future__ import annotations

import copy

import pytest
import torch

import assocgan.train as train_mod
from assocgan.config import make_config
from assocgan.data.benchmarks import Benchmark
from assocgan.evaluate import identity_scores
from assocgan.methods import METHODS, Batch
from assocgan.methods.tl import TL
from assocgan.train import train_method
from degraded import degraded_benchmark

WEIGHTS = torch.tensor([0.05, 0.45, 0.1, 0.2])  # unequal, summing to less than 1 (a share left to a method's own term)


class WeightedSpy(TL):
    """Batches of the current task with unequal content weights; keeps, at every step, G's weights before the
    update, the batch, and G's gradient after the loop's backward."""

    name = "weighted-spy"

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.seen: list[dict] = []

    def batch(self, t, task):
        b = Batch.of(*task.sample(len(WEIGHTS), self.ctx.gen), t)
        b.weight = WEIGHTS.clone()
        return b

    def generator_loss(self, step):
        self.seen.append({"state": copy.deepcopy(self.ctx.G.state_dict()), "x": step.x.detach().clone(), "y": step.y.detach().clone()})
        return None

    def after_step(self, step):
        self.seen[-1]["grad"] = {k: p.grad.detach().clone() for k, p in self.ctx.G.named_parameters()}


@pytest.fixture(scope="module")
def colorcast():
    """A colour-cast task at the smoke preset's size (learnable in a few steps)."""
    cfg = make_config("smoke")
    return degraded_benchmark(["colorcast"], size=cfg.size, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed).tasks[0]


def test_the_loop_optimises_the_weighted_content_loss_of_eq3(monkeypatch, colorcast):
    monkeypatch.setitem(METHODS, WeightedSpy.name, WeightedSpy)
    cfg = make_config("smoke", steps=3, lambda_adv=0.0, lambda_content=2.0, methods=[WeightedSpy.name])
    bench = Benchmark("one", "psnr", [colorcast])
    logged = []  # the content loss the loop logs: at its first and its last step here
    recs = train_method(WeightedSpy.name, bench, cfg, log=lambda name, value, step: logged.append(value) if name == "loss/content" else None)
    m = recs[-1].method
    assert len(m.seen) == cfg.steps
    G = copy.deepcopy(m.ctx.G)
    hand_losses = []
    for s, rec in enumerate(m.seen):
        G.load_state_dict(rec["state"])
        G.zero_grad()
        # by hand, one sample at a time: sum_i w_i * MSE(G(x_i), y_i)
        errors = [(G(rec["x"][i : i + 1]) - rec["y"][i : i + 1]).pow(2).mean() for i in range(len(WEIGHTS))]
        loss = sum(w * e for w, e in zip(WEIGHTS.tolist(), errors))
        hand_losses.append(float(loss.detach()))
        plain = float(sum(errors).detach()) / len(errors)
        assert plain != pytest.approx(hand_losses[-1], rel=1e-3)  # the weights matter: the plain mean is another number
        (cfg.lambda_content * loss).backward()  # the loop's G loss: lambda_content times the content loss
        for k, p in G.named_parameters():
            torch.testing.assert_close(rec["grad"][k], p.grad, rtol=1e-4, atol=1e-9, msg=lambda msg, k=k, s=s: f"step {s} {k}: {msg}")
    # the loss the loop logs (first and last step) and its per-task mean are that weighted sum
    assert logged == pytest.approx([hand_losses[0], hand_losses[-1]], rel=1e-5)
    assert recs[0].losses["content"] == pytest.approx(sum(hand_losses) / cfg.steps, rel=1e-5)


class AutocastSpy(TL):
    """Records the content loss of every step."""

    name = "autocast-spy"

    def __init__(self, ctx, **opts):
        super().__init__(ctx, **opts)
        self.losses: list[float] = []

    def generator_loss(self, step):
        self.losses.append(float(((step.fake.detach().float() - step.y) ** 2).mean()))
        return None


def test_default_bf16_autocast_trains(monkeypatch, colorcast):
    monkeypatch.setitem(METHODS, AutocastSpy.name, AutocastSpy)
    cfg = make_config("smoke", amp=True, steps=20, lr=2e-3, beta1=0.9, methods=[AutocastSpy.name])
    assert make_config("quick").amp == make_config("paper").amp == "bf16"  # the default path outside the smoke preset
    task = colorcast
    seen = []  # (network, training, dtype of its first convolution's output) of every forward pass
    original = train_mod.build_networks

    def build(cfg_, device, method):
        G, D = original(cfg_, device, method)
        for name, net, conv in (("G", G, G.down[0][0]), ("D", D, D.net[0])):
            conv.register_forward_hook(lambda module, inputs, output, name=name, net=net: seen.append((name, net.training, output.dtype)))
        return G, D

    monkeypatch.setattr(train_mod, "build_networks", build)
    recs = train_method(AutocastSpy.name, Benchmark("one", "psnr", [task]), cfg)
    # the training step's forward passes run in bfloat16: G once, D on the real, the generated pairs and for
    # G's adversarial term; the evaluation in float32
    training = [(name, dt) for name, train, dt in seen if train]
    assert sorted(set(training)) == [("D", torch.bfloat16), ("G", torch.bfloat16)]
    assert [name for name, _ in training].count("G") == cfg.steps and [name for name, _ in training].count("D") == 3 * cfg.steps
    assert {dt for _, train, dt in seen if not train} == {torch.float32}
    losses = recs[0].method.losses
    assert len(losses) == cfg.steps and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])  # it learns
    G = recs[0].generator
    x, _ = task.test_pairs()
    with torch.no_grad():
        assert torch.isfinite(G.eval()(x)).all()
    score = recs[0].scores[0]["psnr"]
    assert score > identity_scores(task)["psnr"] + 2  # beats doing nothing


def test_threads_zero_means_every_core(monkeypatch):
    monkeypatch.setattr(train_mod.os, "cpu_count", lambda: 3)
    before = torch.get_num_threads()
    try:
        train_mod.set_threads(make_config("smoke", threads=0))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
