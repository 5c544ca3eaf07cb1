"""What the tests of the methods with weights per task (LoRA, CMC) share: a smoke configuration of one method, a
random move of a task's trainable weights (as training would move them), and the check that a saved state and the
checkpoints answer every task as the method did."""

from __future__ import annotations

import torch

from assocgan.config import make_config
from assocgan.data.benchmarks import benchmark_for
from assocgan.inference import predict
from assocgan.methods import get_method


def smoke(name: str, **kw):
    """The smoke preset's configuration training ``name`` with its options ``opts``, and its benchmark."""
    opts = kw.pop("opts", {})
    cfg = make_config("smoke", threads=1, methods=[name], method_options={name: opts}, **kw)
    return cfg, benchmark_for(cfg)


def perturb(m, t: int, seed: int = 0) -> None:
    """Task t's trainable tensors moved at random (from ``seed + t``)."""
    with torch.no_grad():
        for p in m.g_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + t)) * 0.05)


def check_a_restored_state_answers_the_same(name: str, make, cfg, bench, seed: int = 0) -> None:
    """Three tasks of ``make(cfg)`` (a method on a fresh generator), each with its weights moved; then a method made
    on other weights (``make(cfg, seed_weights=2)``) given the saved state and weights answers every task exactly
    as the first did, trains the same parameters, and so do the checkpoints (``load_generator``, ``translate --task``)."""
    m = make(cfg)
    x = bench.tasks[0].test_pairs()[0]
    for t in range(3):
        m.before_task(t, bench.tasks[t])
        perturb(m, t, seed)
    want = [predict(m.eval_generator(j), x) for j in range(3)]
    assert not torch.equal(want[2], want[1])
    state, weights = m.state_dict(), {k: v.clone() for k, v in m.ctx.G.state_dict().items()}
    fresh = make(cfg, seed_weights=2)
    fresh.load_state_dict(state, bench.tasks[:3])
    fresh.ctx.G.load_state_dict(weights)
    assert [k for k, p in fresh.ctx.G.named_parameters() if p.requires_grad] == state["trainable"]
    for j in range(3):
        assert torch.equal(predict(fresh.eval_generator(j), x), want[j])
    for j in range(3):
        G = get_method(name).generator_from_checkpoints(cfg, lambda k: weights, 2, j)
        assert torch.equal(predict(G, x), want[j])
