"""SI (Zenke et al.) on the generator: the path integral of the training loss, the importance it gives, the
penalty and its gradient, through the method's hooks on a tiny network and through the real loop and CLI."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from assocgan.config import make_config
from assocgan.methods import Context, Step, get_method
from assocgan.methods.si import SI

LR = 0.05


def tiny_method(**opts) -> SI:
    torch.manual_seed(0)
    G = torch.nn.Linear(3, 2)
    with torch.no_grad():  # weights float16 holds exactly: theta* is then the weights themselves
        for p in G.parameters():
            p.copy_(p.half().float())
    cfg = make_config("smoke", threads=1)
    ctx = Context(
        cfg=cfg, G=G, D=torch.nn.Linear(1, 1), gen=torch.Generator().manual_seed(0), n_tasks=2, task_names=["a", "b"], autocast=contextlib.nullcontext
    )
    return SI(ctx, **opts)


def quadratic(G, h, opt):
    """L = sum h/2 (theta - opt)^2 over G's weights (a separable quadratic, its gradient h (theta - opt))."""
    return sum((0.5 * h[k] * (p - opt[k]).pow(2)).sum() for k, p in G.named_parameters())


def train_task(m: SI, t: int, h, opt, steps: int = 40):
    """Plain SGD on ``quadratic`` plus the method's penalty, through the hooks as the loop calls them; the path
    integral of the quadratic alone, computed here, -sum g * delta_theta per weight."""
    G = m.ctx.G
    m.before_task(t, None)
    expected = {k: torch.zeros_like(p) for k, p in G.named_parameters()}
    for s in range(steps):
        step = Step(t, s, None, None)
        loss = quadratic(G, h, opt)
        g_loss = dict(zip(dict(G.named_parameters()), torch.autograd.grad(loss, list(G.parameters()), retain_graph=True)))
        extra = m.generator_loss(step)
        if extra is not None:
            loss = loss + extra
        G.zero_grad(set_to_none=True)
        loss.backward()
        before = {k: p.detach().clone() for k, p in G.named_parameters()}
        with torch.no_grad():
            for p in G.parameters():
                p.sub_(LR * p.grad)
        for k, p in G.named_parameters():
            expected[k] += -g_loss[k] * (p.detach() - before[k])
        m.after_step(step)
    return expected


def targets(G, seed):
    gen = torch.Generator().manual_seed(seed)
    h = {k: torch.rand(p.shape, generator=gen) * 2 for k, p in G.named_parameters()}
    opt = {k: torch.randn(p.shape, generator=gen) for k, p in G.named_parameters()}
    return h, opt


def test_omega_is_the_path_integral_of_the_training_loss_alone():
    """omega = -sum_t g(t) delta_theta(t) of the task's loss, with plain SGD steps; in the second task the
    penalty's gradient moves the weights too but is not integrated."""
    m = tiny_method(si_c=3.0, si_xi=1e-3)
    G = m.ctx.G
    h, opt = targets(G, 1)
    expected = train_task(m, 0, h, opt)
    for k, w in m.path.omega.items():
        torch.testing.assert_close(w, expected[k], rtol=1e-5, atol=1e-7)
    assert sum(float(w.sum()) for w in m.path.omega.values()) > 0  # the loss went down
    start = {k: v.clone() for k, v in m.path.start.items()}
    m.after_task(0, None)
    # Omega = max(omega, 0) / (Delta^2 + xi), stored doubled (the curvature's unit) in bfloat16
    for k, p in G.named_parameters():
        want = 2 * expected[k].clamp(min=0) / ((p.detach() - start[k]).pow(2) + 1e-3)
        torch.testing.assert_close(m.anchor.stored_importance[k].float(), want, rtol=1e-2, atol=1e-6)
    first = {k: m.anchor.stored_importance[k].float().clone() for k in start}

    h2, opt2 = targets(G, 2)
    with torch.no_grad():  # weights set between the tasks: the next task's path starts where it starts
        for p in G.parameters():
            p.add_(0.25)
    start = {k: p.detach().clone() for k, p in G.named_parameters()}
    expected = train_task(m, 1, h2, opt2)
    for k, w in m.path.omega.items():
        torch.testing.assert_close(w, expected[k], rtol=1e-4, atol=1e-6)
    m.after_task(1, None)
    for k, p in G.named_parameters():  # the tasks' terms are summed
        want = first[k] + 2 * expected[k].clamp(min=0) / ((p.detach() - start[k]).pow(2) + 1e-3)
        torch.testing.assert_close(m.anchor.stored_importance[k].float(), want, rtol=2e-2, atol=1e-5)


def test_importance_is_the_curvature_of_a_quadratic_walked_to_its_minimum():
    """The one calibration: 2 omega / Delta^2 is h on h/2 (theta - opt)^2 walked to its minimum (with SGD steps
    of rate r, exactly 2h / (2 - r h): the sum of the geometric series of the steps' decreases)."""
    m = tiny_method(si_xi=1e-9)
    G = m.ctx.G
    h, opt = targets(G, 4)
    h = {k: v + 0.5 for k, v in h.items()}
    train_task(m, 0, h, opt, steps=600)
    m.after_task(0, None)
    for k in h:
        stored = m.anchor.stored_importance[k].float()
        torch.testing.assert_close(stored, 2 * h[k] / (2 - LR * h[k]), rtol=1e-2, atol=1e-4)
        torch.testing.assert_close(stored, h[k], rtol=LR * 2.5 / 2 + 1e-2, atol=1e-4)


def test_penalty_is_zero_at_the_anchor_positive_elsewhere_and_its_gradient_is_2c_omega_offset():
    c = 2.5
    m = tiny_method(si_c=c)
    G = m.ctx.G
    assert m.generator_loss(Step(0, 0, None, None)) is None  # no penalty while the first task trains
    h, opt = targets(G, 5)
    train_task(m, 0, h, opt)
    with torch.no_grad():  # end the task on weights float16 holds exactly
        for p in G.parameters():
            p.copy_(p.half().float())
    m.after_task(0, None)
    assert m.memory() == {"anchor": 4 * sum(p.numel() for p in G.parameters())}
    penalty = m.generator_loss(Step(1, 0, None, None))
    assert float(penalty.detach()) == 0.0
    torch.manual_seed(7)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    penalty = m.generator_loss(Step(1, 1, None, None))
    assert float(penalty.detach()) > 0
    params = dict(G.named_parameters())
    omega = {k: m.anchor.stored_importance[k].float() / 2 for k in params}  # Zenke et al.'s Omega
    offset = {k: params[k].detach() - m.anchor.stored_theta[k].float() for k in params}
    want = c * sum(float((omega[k] * offset[k].pow(2)).sum()) for k in params)
    assert float(penalty.detach()) == pytest.approx(want, rel=1e-5)
    grads = torch.autograd.grad(penalty, list(params.values()))
    for (k, _), g in zip(params.items(), grads):
        torch.testing.assert_close(g, 2 * c * omega[k] * offset[k], rtol=1e-5, atol=1e-8)


def test_state_dict_round_trip_goes_on_identically():
    a = tiny_method(si_c=1.5)
    h, opt = targets(a.ctx.G, 8)
    train_task(a, 0, h, opt, steps=10)
    a.after_task(0, None)
    train_task(a, 1, h, opt, steps=5)
    b = tiny_method(si_c=1.5)
    b.load_state_dict(a.state_dict(), [])
    with torch.no_grad():
        for p, q in zip(b.ctx.G.parameters(), a.ctx.G.parameters()):
            p.copy_(q)
    for m in (a, b):  # the rest of the task, without before_task (a resume in the middle of a task)
        m.before_task = lambda t, task: None
        train_task(m, 1, h, opt, steps=5)
        m.after_task(1, None)
    for k in a.path.omega:
        assert torch.equal(a.anchor.stored_importance[k], b.anchor.stored_importance[k])
        assert torch.equal(a.anchor.stored_theta[k], b.anchor.stored_theta[k])


def test_si_is_registered_with_its_options():
    m = get_method("si")
    assert m is SI and m.title == "SI (Zenke et al.)"
    assert {o.name: o.default for o in m.options} == {"si_c": 1.0, "si_xi": 1e-3}


def test_cli_smoke_run_writes_si_entry(tmp_path):
    from assocgan.cli import main

    out = tmp_path / "run"
    rc = main(["run", "--preset", "smoke", "--methods", "tl,si", "--benchmark", "restore4", "--order", "1,2", "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["tl", "si"]
    entry = res["methods"]["si"]
    assert entry["complete"] and len(entry["matrix"]) == len(res["tasks"]) == 2
    assert entry["memory_bytes"] > 0
    assert entry["options"] == {"si_c": 1.0, "si_xi": 1e-3}


def test_in_the_real_loop_the_penalty_acts_from_the_second_task():
    from assocgan.data.benchmarks import Benchmark
    from assocgan.runner import benchmark_for
    from assocgan.train import train_method

    cfg = make_config("smoke", threads=1, steps=6, methods=["si"], method_options={"si": {"si_xi": 1e-6}})
    full = benchmark_for(cfg)
    records = train_method("si", Benchmark("restore2", full.metric, full.tasks[:2]), cfg, device=torch.device("cpu"))
    m = records[-1].method
    assert "g_extra" not in records[0].losses and records[1].losses["g_extra"] > 0
    imp = torch.cat([v.float().flatten() for v in m.anchor.stored_importance.values()])
    assert (imp >= 0).all() and imp.sum() > 0
    assert records[1].memory == {"anchor": 4 * sum(p.numel() for p in m.ctx.G.parameters())}
