"""assocgan.fisher, the machinery of every quadratic penalty: the custom penalty's gradient (gradcheck), the
one curvature (the Gauss-Newton diagonal) against a linear model's in closed form and against the measured loss
rise of a trained generator on real photos, the discriminator's (Thanh-Tung & Tran) against the exact diagonal
built output by output, and online EWC's decay of the importance."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from assocgan.fisher import (
    LogCodes,
    QuadraticAnchor,
    _QuadraticPenalty,
    content_curvature,
    per_sample_content_loss,
    per_sample_fisher,
    predicted_and_measured_rise,
)
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


# ---- the one curvature: the Gauss-Newton diagonal ------------------------------------------------------
def test_content_curvature_of_a_linear_model_is_its_curvature_in_closed_form():
    """For f(x) = W x + b with P outputs, the mean content loss L = 1/N sum_n 1/P sum_v (W_v x_n + b_v - y_nv)^2
    has the diagonal curvature d2L/dW_vk^2 = 2/P mean_n x_nk^2 and d2L/db_v^2 = 2/P (exact: the model is linear;
    one Rademacher probe is exact too, since each weight reaches one output)."""
    gen = torch.Generator().manual_seed(0)
    n, k, p = 40, 5, 6
    lin = nn.Linear(k, p)
    x = torch.randn(n, k, generator=gen) * torch.tensor([0.5, 1.0, 2.0, 0.1, 1.5])
    with torch.no_grad():
        y = lin(x) + 0.2 * (torch.randint(0, 2, (n, p), generator=gen).float() * 2 - 1)
    curvature, mse = content_curvature(lin, x, y, torch.Generator().manual_seed(1))
    assert mse == pytest.approx(0.04, rel=1e-5)
    torch.testing.assert_close(curvature["weight"], (2 / p * x.pow(2).mean(0)).expand(p, k), rtol=1e-5, atol=0)
    torch.testing.assert_close(curvature["bias"], torch.full((p,), 2 / p), rtol=1e-5, atol=0)


def test_content_curvature_of_a_shared_weight_does_not_depend_on_correlated_residuals():
    """One weight w shared by P outputs, f_v = w x_v + b (a 1x1 convolution): d2L/dw^2 = 2/P mean_n sum_v x_nv^2,
    whatever the residuals. Here each sample's residual is one value repeated over its outputs (as correlated as
    an image's get): the estimate (many probes) is the curvature, while the earlier calibration (the empirical
    Fisher times P / (2 mse), exact only for independent residuals) is about P times too large."""
    gen = torch.Generator().manual_seed(0)
    n, p = 20, 50
    conv = nn.Conv1d(1, 1, 1)
    x = torch.rand(n, 1, p, generator=gen) + 0.5
    with torch.no_grad():
        y = conv(x) + 0.1 * (torch.randint(0, 2, (n, 1, 1), generator=gen).float() * 2 - 1)
    curvature, mse = content_curvature(conv, x, y, torch.Generator().manual_seed(1), probes=400)
    want = 2 / p * float(x.pow(2).sum((1, 2)).mean())
    assert float(curvature["weight"]) == pytest.approx(want, rel=0.1)
    assert float(curvature["bias"]) == pytest.approx(2.0, rel=0.1)  # 2/P over P outputs
    empirical = per_sample_fisher(conv, lambda call, xi, yi: per_sample_content_loss(call(xi), yi[None])[0], x, y)
    assert float(empirical["weight"]) * p / (2 * mse) / want > p / 2


@pytest.mark.parametrize("task", ["oversharpen", "blur"])
def test_curvature_predicts_the_loss_rise_of_a_trained_generator_on_real_photos(task):
    """The penalty at weight 1, 0.5 * sum H delta^2, predicts how much a trained generator's content loss on a
    task's real photos rises when its weights move by a small random delta (the mean of +delta and -delta,
    which cancels the gradient's share), within 1.5x. The earlier calibration, the empirical Fisher (squared
    gradients of each sample's loss) times P / (2 mse), assumes independent pixel residuals; an image's
    residuals are correlated, and it overstates the rise several times (docs/methods.md)."""
    from assocgan.data.benchmarks import load_benchmark
    from assocgan.losses import content_loss
    from assocgan.nets.unet import UNet

    bench = load_benchmark("restore4", size=32, n_train=64, n_test=4, seed=0)
    t = next(tt for tt in bench.tasks if tt.name == task)
    torch.manual_seed(0)
    G = UNet(ngf=8, context=True)
    opt = torch.optim.Adam(G.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        x, y = t.sample(8, gen)
        loss = content_loss(G(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = t.sample(32, gen)
    curvature, mse = content_curvature(G, x, y, torch.Generator().manual_seed(1))
    P = y[0].numel()
    old = {k: v * P / (2 * mse) for k, v in per_sample_fisher(G, lambda call, xi, yi: per_sample_content_loss(call(xi), yi[None])[0], x, y).items()}
    rise, predicted = predicted_and_measured_rise(G, x, y, {"new": curvature, "old": old}, torch.Generator().manual_seed(5))
    predicted, predicted_old = predicted["new"], predicted["old"]
    assert rise > 0
    assert 1 / 1.5 < predicted / rise < 1.5, predicted / rise
    assert predicted_old / rise > 3, predicted_old / rise  # the earlier calibration: several times the measured rise


# ---- the discriminator's curvature ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_discriminator_curvature_matches_the_exact_gauss_newton_diagonal(mode):
    """A PatchGAN has several outputs a sample, so one probe is exact only in expectation: with many probes
    the estimate approaches sum_v c_v J_v^2 built from each output's own gradient, c being the loss's second
    derivative in the output (2 / values for LSGAN, s (1 - s) / values for the vanilla loss), the real and the
    generated pairs weighing half each."""
    torch.manual_seed(0)
    D = PatchGAN(6, 4, norm="instance", image_size=32)
    gen = torch.Generator().manual_seed(1)
    x, y, fake = (torch.rand(2, 3, 32, 32, generator=gen) for _ in range(3))
    got = discriminator_fisher(D, x, y, fake, mode, torch.Generator().manual_seed(2), probes=300)

    D.eval()
    exact = {k: torch.zeros_like(p) for k, p in D.named_parameters()}
    for other in (y, fake):
        for i in range(2):
            out = D(x[i : i + 1], other[i : i + 1]).flatten()
            s = torch.sigmoid(out.detach())
            c = torch.full_like(s, 2.0) if mode == "lsgan" else s * (1 - s)
            for v in range(out.numel()):
                grads = torch.autograd.grad(out[v], list(D.parameters()), retain_graph=True)
                for (k, _), g in zip(D.named_parameters(), grads):
                    exact[k] += c[v] / out.numel() * g.pow(2) / 4  # the mean over 2 samples, half for each kind
    assert out.numel() > 1
    assert set(got) == set(exact)
    for k in exact:  # per tensor, within the probes' noise
        assert float(got[k].sum()) == pytest.approx(float(exact[k].sum()), rel=0.1), k
    flat = torch.stack([torch.cat([v.flatten() for v in d.values()]) for d in (got, exact)])
    assert torch.corrcoef(flat)[0, 1] > 0.95


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
    estimates = [
        {k: torch.rand(p.shape, generator=gen) * 10.0 ** torch.randint(-3, 2, p.shape, generator=gen) for k, p in lin.named_parameters()} for _ in range(3)
    ]
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
