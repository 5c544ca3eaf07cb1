"""assocgan.fisher, the machinery of every quadratic penalty: the custom penalty's gradient (gradcheck), the
Laplace calibration of the empirical Fisher against a linear model's curvature in closed form, online EWC's
decay of the importance, and the discriminator's Fisher (Thanh-Tung & Tran) against a plain per-sample loop."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from assocgan.fisher import LogCodes, QuadraticAnchor, _QuadraticPenalty, content_curvature, laplace_curvature
from assocgan.losses import gan_loss
from assocgan.methods.thanh import discriminator_fisher
from assocgan.nets import PatchGAN


# ---- the custom penalty ------------------------------------------------------------------------------
def test_quadratic_penalty_gradient_passes_gradcheck_in_float64():
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 1, 3)]
    params = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
    thetas = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    importances = [3 * torch.rand(s, generator=gen, dtype=torch.float64) for s in shapes]

    def penalty(*ps):
        return _QuadraticPenalty.apply(thetas, importances, *ps)

    want = 0.5 * sum((f * (p.detach() - t).pow(2)).sum() for p, t, f in zip(params, thetas, importances))
    assert float(penalty(*params).detach()) == pytest.approx(float(want), rel=1e-12)
    assert torch.autograd.gradcheck(penalty, params, eps=1e-6, atol=1e-8, rtol=1e-6)
    # the incoming gradient scales the result (a penalty weight lambda multiplies the penalty)
    assert torch.autograd.gradcheck(lambda *ps: 2.5 * penalty(*ps), params, eps=1e-6, atol=1e-8, rtol=1e-6)


# ---- the Laplace calibration ---------------------------------------------------------------------------
def test_content_curvature_of_a_linear_model_is_its_curvature_in_closed_form():
    """For f(x) = W x + b with P outputs, the mean content loss L = 1/N sum_n 1/P sum_v (W_v x_n + b_v - y_nv)^2
    has the diagonal curvature d2L/dW_vk^2 = 2/P mean_n x_nk^2 and d2L/db_v^2 = 2/P (exact: the model is linear).
    With residuals of one magnitude s (random signs), squared residuals of variance mse = s^2 as the calibration
    assumes, the calibrated empirical Fisher is that curvature exactly."""
    gen = torch.Generator().manual_seed(0)
    n, k, p, s = 40, 5, 6, 0.2
    lin = nn.Linear(k, p)
    x = torch.randn(n, k, generator=gen) * torch.tensor([0.5, 1.0, 2.0, 0.1, 1.5])
    signs = torch.randint(0, 2, (n, p), generator=gen).float() * 2 - 1
    with torch.no_grad():
        y = lin(x) + s * signs
    curvature, mse = content_curvature(lin, x, y, chunk=16)
    assert mse == pytest.approx(s**2, rel=1e-5)
    torch.testing.assert_close(curvature["weight"], (2 / p * x.pow(2).mean(0)).expand(p, k), rtol=1e-4, atol=0)
    torch.testing.assert_close(curvature["bias"], torch.full((p,), 2 / p), rtol=1e-4, atol=0)


def test_laplace_curvature_factors():
    fisher = {"a": torch.tensor([1.0, 4.0]), "b": torch.tensor([[0.5]])}
    # squared residuals: values / (2 mse)
    got = laplace_curvature(fisher, 100, 0.01)
    assert torch.equal(got["a"], fisher["a"] * 5000) and torch.equal(got["b"], fisher["b"] * 5000)
    # log-likelihood terms: the number of values
    got = laplace_curvature(fisher, 7, None)
    assert torch.equal(got["a"], fisher["a"] * 7) and torch.equal(got["b"], fisher["b"] * 7)


# ---- the discriminator's Fisher -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_discriminator_fisher_matches_a_plain_per_sample_loop(mode):
    torch.manual_seed(0)
    D = PatchGAN(6, 4, norm="instance", image_size=32)
    gen = torch.Generator().manual_seed(1)
    x, y, fake = (torch.rand(3, 3, 32, 32, generator=gen) for _ in range(3))
    got = discriminator_fisher(D, x, y, fake, mode)

    D.eval()
    squares = {k: torch.zeros_like(p) for k, p in D.named_parameters()}
    for i in range(3):
        for other, real in ((y, True), (fake, False)):
            D.zero_grad()
            gan_loss(D(x[i : i + 1], other[i : i + 1]), real, mode).backward()
            for k, p in D.named_parameters():
                squares[k] += p.grad.pow(2) / 6  # the mean over the real and the generated pairs together
    with torch.no_grad():
        pred_real, pred_fake = D(x, y), D(x, fake)
        loss = 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))
    values = pred_real[0].numel()
    assert values > 1  # patches: the per-sample loss is a mean over several outputs
    scale = values / (2 * float(loss)) if mode == "lsgan" else values
    assert set(got) == set(squares)
    for k in squares:
        torch.testing.assert_close(got[k], squares[k] * scale, rtol=1e-4, atol=1e-10)


# ---- online EWC: decay * F_old + F_new ---------------------------------------------------------------
def _shifted(model, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("decay", [0.5, 0.2])
def test_anchor_importance_is_decayed_and_added_and_theta_star_moves(decay):
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    gen = torch.Generator().manual_seed(1)
    estimates = [{k: torch.rand(p.shape, generator=gen) * 10.0 ** torch.randint(-3, 2, p.shape, generator=gen) for k, p in lin.named_parameters()}
                 for _ in range(3)]
    anchor = QuadraticAnchor(decay=decay, storage="half")
    compact = QuadraticAnchor(decay=decay, storage="8bit")
    want = None
    for i, est in enumerate(estimates):
        anchor.update(lin, est)
        compact.update(lin, est)
        # what is stored: bfloat16 of decay * (the stored importance) + the new estimate
        want = {k: (v if want is None else decay * want[k].float() + v).to(torch.bfloat16) for k, v in est.items()}
        for k in est:
            assert torch.equal(anchor.stored_importance[k], want[k]), (i, k)
            assert isinstance(compact.stored_importance[k], LogCodes)
            torch.testing.assert_close(compact.stored_importance[k].float(), want[k].float(), rtol=0.03, atol=0)
        theta_star = {k: p.detach().half() for k, p in lin.named_parameters()}
        assert all(torch.equal(anchor.stored_theta[k], theta_star[k]) for k in theta_star)  # the newest weights
        _shifted(lin, 0.1, seed=10 + i)
    # the penalty at the moved weights uses the combined importance and the newest theta*
    hand = 0.5 * sum(float((want[k].float() * (p.detach() - theta_star[k].float()).pow(2)).sum()) for k, p in lin.named_parameters())
    assert float(anchor.penalty().detach()) == pytest.approx(hand, rel=1e-5)
    # the undiscounted sum would differ: the check above tells decay 1 from the decay given
    undiscounted = {k: sum(e[k] for e in estimates) for k in estimates[0]}
    assert any(not torch.allclose(undiscounted[k], want[k].float(), rtol=0.05) for k in want)


@pytest.mark.parametrize("storage", ["half", "compact"])
def test_sparse_anchor_drops_the_least_important_weights_and_keeps_the_penalty(storage):
    """keep < 1: the smallest importances holding 1 - keep of the total become zero, theta* is stored for the
    others only, and the penalty at theta* is still zero; under a drift of every weight it stays within the
    dropped share of the dense penalty; it survives state_dict."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
    gen = torch.Generator().manual_seed(2)
    # heavy-tailed, as a generator's Fisher is: most of the total in few weights
    fisher = {k: torch.rand(p.shape, generator=gen).pow(12) for k, p in model.named_parameters()}
    dense = QuadraticAnchor(storage=storage)
    sparse = QuadraticAnchor(storage=storage, keep=0.99)
    exact = QuadraticAnchor(storage="half")
    dense.update(model, fisher)
    exact.update(model, fisher)
    sparse.update(model, fisher)
    n = sum(p.numel() for p in model.parameters())
    kept = sum(int((sparse.stored_importance[k].float() > 0).sum()) for k in fisher)
    assert kept < 0.6 * n
    assert sum(v.numel() for v in sparse.stored_theta.values()) == kept
    assert sparse.memory_bytes() < dense.memory_bytes() - 2 * (n - kept) + 64
    dropped = sum(float(f[sparse.stored_importance[k].float() == 0].sum()) for k, f in fisher.items())
    assert 0 < dropped <= 0.0101 * sum(float(f.sum()) for f in fisher.values())
    at_anchor = float(sparse.penalty().detach())  # theta* in float16: only its rounding is left
    _shifted(model, 0.1, seed=3)
    a, b = float(exact.penalty().detach()), float(sparse.penalty().detach())
    assert at_anchor < 1e-4 * b
    # within the dropped share (1%) and, with 4-bit codes, their rounding (as test_assoc's compact storage test)
    assert b == pytest.approx(a, rel=0.02 if storage == "half" else 0.1)
    assert b < a or storage == "compact"  # the dropped weights moved too, and no longer count
    restored = QuadraticAnchor(storage=storage, keep=0.99)
    restored.load_state_dict(sparse.state_dict(), model)
    assert float(restored.penalty().detach()) == pytest.approx(b, rel=1e-6)
    with pytest.raises(ValueError):
        QuadraticAnchor(keep=0)


def test_sparse_penalty_has_the_dense_penalty_value_and_gradient():
    """The sparse anchor's penalty reads only the weights that keep a theta*; the dense formula over the same
    stored importance and theta* (zero importance elsewhere) gives the same value and the same gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))
    gen = torch.Generator().manual_seed(4)
    anchor = QuadraticAnchor(storage="compact", keep=0.95)
    anchor.update(model, {k: torch.rand(p.shape, generator=gen).pow(6) for k, p in model.named_parameters()})
    _shifted(model, 0.05, seed=5)
    importance = {k: anchor.stored_importance[k].float() for k in anchor.stored_importance}
    params = dict(model.named_parameters())
    theta = {}
    for k, f in importance.items():
        theta[k] = torch.zeros_like(f)
        theta[k][f > 0] = anchor.stored_theta[k].float()
    dense = 0.5 * sum((importance[k] * (params[k] - theta[k]).pow(2)).sum() for k in importance)
    want = torch.autograd.grad(dense, list(params.values()))
    got_value = anchor.penalty()
    got = torch.autograd.grad(got_value, list(params.values()))
    assert float(got_value.detach()) == pytest.approx(float(dense.detach()), rel=1e-5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-12)
    assert any((g == 0).any() and (g != 0).any() for g in got)  # some weights pulled, others not
