"""MAS (Memory Aware Synapses) on the generator: the importance is the mean over inputs of the magnitude of the
gradient of the squared norm of what the generator does (autograd, one input at a time, on a tiny network);
the penalty's gradient is ``2 lambda Omega (theta - theta*)`` with the importances of the tasks summed and theta*
the newest weights; the inputs come from a stream of their own (lambda 0 trains exactly TL's generator); the
memory it claims; a smoke run through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from assocgan.methods.mas import output_sensitivity
from test_methods_regularization import train

STEPS = 6


class Tiny(nn.Module):
    """A residual image-to-image network small enough to differentiate by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.dropout = nn.Dropout(0.5)  # off in evaluation mode, as the importance is taken

    def forward(self, x):
        return x + torch.tanh(self.dropout(self.conv(x)))


@pytest.mark.parametrize("change", [True, False])
def test_importance_is_the_mean_magnitude_of_each_input_s_gradient_of_the_squared_norm(change):
    torch.manual_seed(0)
    model = Tiny().train()
    x = torch.randn(5, 3, 4, 4)  # of both signs, so that the inputs' gradients do not all agree
    got = output_sensitivity(model, x, change=change, chunk=2)
    assert model.training  # left as it was
    model.eval()
    params = dict(model.named_parameters())
    want = {k: torch.zeros_like(p) for k, p in params.items()}
    for xi in x:
        out = model(xi[None])
        f = out - xi[None] if change else out
        grads = torch.autograd.grad(f.pow(2).sum() / f.numel(), list(params.values()))
        for k, g in zip(params, grads):
            want[k] += g.abs() / x.shape[0]
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-9)
    # the magnitude is taken input by input: the magnitude of the mean gradient is smaller somewhere
    model.zero_grad()
    mean_loss = sum(((model(xi[None]) - (xi[None] if change else 0)).pow(2).mean()) for xi in x) / x.shape[0]
    mean_loss.backward()
    assert any((params[k].grad.abs() < want[k] - 1e-6).any() for k in want)


def test_the_change_is_the_same_for_any_pixel_origin_and_the_output_is_not():
    torch.manual_seed(1)
    model = Tiny().eval()
    x = torch.rand(4, 3, 4, 4)

    class Shifted(nn.Module):  # the same network on images whose zero is put elsewhere
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner(z - 0.5) + 0.5

    shifted = Shifted(model)
    for change in (True, False):
        a = output_sensitivity(model, x - 0.5, change=change)
        b = {k.removeprefix("inner."): v for k, v in output_sensitivity(shifted, x, change=change).items()}
        same = all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-9) for k in a)
        assert same is change


def test_penalty_acts_after_the_first_task_and_its_gradient_is_2_lambda_omega_offset(bench2, monkeypatch):
    from assocgan.methods import mas

    estimates = []
    original = mas.output_sensitivity

    def spy(model, x, change=True, chunk=16):
        out = original(model, x, change=change, chunk=chunk)
        estimates.append(({k: v.clone() for k, v in out.items()}, {k: p.detach().clone() for k, p in model.named_parameters()}))
        return out

    monkeypatch.setattr(mas, "output_sensitivity", spy)
    lam = 2.5
    records, m = train("mas", bench2, steps=STEPS, mas_lambda=lam, mas_samples=8)
    assert "g_extra" not in records[0].losses and records[1].losses["g_extra"] > 0
    assert len(estimates) == 2
    named = dict(m.ctx.G.named_parameters())
    # the importances of the tasks are summed (as stored, bfloat16), theta* is the weights after the last task
    for k in named:
        summed = estimates[0][0][k] + estimates[1][0][k]
        torch.testing.assert_close(m.anchor.stored_importance[k].float(), summed.to(torch.bfloat16).float())
        torch.testing.assert_close(m.anchor.stored_theta[k].float(), estimates[1][1][k].half().float())
    omega = {k: m.anchor.stored_importance[k].float() for k in named}
    assert max(float(v.max()) for v in omega.values()) > 0
    torch.manual_seed(3)
    with torch.no_grad():
        for p in named.values():
            p.add_(0.1 * (p.std() if p.numel() > 1 else 0.02) * torch.randn_like(p))
    off = {k: (named[k] - m.anchor.stored_theta[k].float()).detach() for k in named}
    value = m.generator_loss(None)
    want = lam * sum(float((omega[k].double() * off[k].double().pow(2)).sum()) for k in named)
    assert float(value.detach()) == pytest.approx(want, rel=1e-5)
    grads = torch.autograd.grad(value, list(named.values()))
    for k, g in zip(named, grads):
        torch.testing.assert_close(g, 2 * lam * omega[k] * off[k], rtol=1e-5, atol=1e-12)
    n = sum(p.numel() for p in named.values())
    assert records[-1].memory == {"anchor": 4 * n} and m.memory_bytes() == 4 * n


def test_mas_at_weight_zero_trains_exactly_as_tl(bench2):
    """MAS's inputs come from a stream of their own: at lambda 0 every draw of the run is TL's."""
    _, zero = train("mas", bench2, steps=STEPS, mas_lambda=0.0, mas_samples=4)
    _, tl = train("tl", bench2, steps=STEPS)
    assert zero.anchor.active
    a, b = zero.ctx.G.state_dict(), tl.ctx.G.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_smoke_run_of_tl_and_mas(tmp_path):
    from assocgan.cli import main

    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--methods", "tl,mas", "--benchmark", "restore4", "--order", "1,2", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    entry = res["methods"]["mas"]
    assert entry["complete"] and len(entry["matrix"]) == 2
    assert entry["memory_bytes"] > 0
