"""The regularisation and distillation baselines (clgan, thanh, liang, lifelonggan, liss): each mechanism acts.

For each method, trained by the real loop on two tiny tasks: its extra loss is absent while the first task
trains and present (non-zero) on the second; that term, and its gradient, are what the method defines, computed
by hand from what it kept after the first task (the anchored quadratic of the EWC-style penalties, the L1
distance to the previous generator's outputs or the previous encoder's features), and a gradient step on it
pulls back towards what was kept. The bytes each method claims per weight. LiSS's auxiliary heads learn their
task. And a smoke run of all five through the CLI writes results.json.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from assocgan.config import make_config
from assocgan.data.benchmarks import Benchmark
from assocgan.methods import Batch, Context, Step, get_method
from assocgan.methods.helpers import FrozenTeacher
from assocgan.methods.lifelonggan import montage, swapped_halves
from assocgan.methods.liss import JIGSAW_ORDERS, encode, jigsaw, rotations
from assocgan.train import build_networks, train_method

STEPS = 12


def train(name, bench, on_task=None, steps=STEPS, **opts):
    cfg = make_config("smoke", threads=1, steps=steps, methods=[name], method_options={name: opts})
    records = train_method(name, bench, cfg, device=torch.device("cpu"), on_task=on_task)
    return records, records[-1].method


def pull(params, term, eps=1e-3):
    """One normalised gradient step of length ``eps`` on ``term()`` alone."""
    loss = term()
    grads = torch.autograd.grad(loss, params)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(eps * g / norm)


def drift(params, scale=0.3):
    """Move the weights away at random, as a longer second task would."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in params:
            spread = p.std() if p.numel() > 1 else p.abs().clamp_min(0.02)
            p.add_(scale * spread * torch.randn_like(p))


def offsets(model, anchor):
    params = dict(model.named_parameters())
    return {k: (params[k] - t.float()).detach() for k, t in anchor.stored_theta.items()}


def assert_penalty_is_the_anchored_quadratic(model, method, penalty, weight):
    """After the weights drift away from theta*: the penalty is ``weight * 0.5 * sum F (theta - theta*)^2`` over
    every trainable weight, with F and theta* as stored, and its gradient is exactly ``weight * F * (theta -
    theta*)`` (a penalty whose gradient is off by any factor fails); a plain gradient step on it with the largest
    safe rate, 1 / (weight * max F), moves no weight away from theta*."""
    named = dict(model.named_parameters())
    keys = list(method.anchor.stored_theta)
    assert set(keys) == {k for k, p in named.items() if p.requires_grad}
    drift([named[k] for k in keys])
    importance = {k: method.anchor.stored_importance[k].float() for k in keys}
    off = offsets(model, method.anchor)
    value = penalty()
    want = weight * 0.5 * sum(float((importance[k].double() * off[k].double().pow(2)).sum()) for k in keys)
    assert want > 0 and float(value.detach()) == pytest.approx(want, rel=1e-5)
    grads = torch.autograd.grad(value, [named[k] for k in keys])
    for k, g in zip(keys, grads):
        torch.testing.assert_close(g, weight * importance[k] * off[k], rtol=1e-5, atol=1e-12, msg=lambda m, k=k: f"{k}: {m}")
    f_max = max(float(f.max()) for f in importance.values())
    with torch.no_grad():
        for k, g in zip(keys, grads):
            named[k].sub_(g / (weight * f_max))
    after = offsets(model, method.anchor)
    assert all((after[k].abs() <= off[k].abs() + 1e-7).all() for k in keys)
    assert float(penalty().detach()) < float(value.detach())


# ---- CLGAN: EWC on the generator -----------------------------------------------------------------


def test_clgan_penalty_acts_after_first_task_and_pulls_generator_back(bench2):
    records, m = train("clgan", bench2, clgan_samples=16, clgan_lambda=2.5)
    assert "g_extra" not in records[0].losses  # no penalty while the first task trains
    assert records[1].losses["g_extra"] > 0
    # the importance is rescaled to the content loss's curvature: far from the minute raw Fisher
    imp = torch.cat([v.float().flatten() for v in m.anchor.stored_importance.values()])
    assert imp.max() > 1e-3 and (imp >= 0).all()
    assert records[1].memory["anchor"] > 0
    assert_penalty_is_the_anchored_quadratic(m.ctx.G, m, lambda: m.generator_loss(None), 2.5)


def test_clgan_at_weight_zero_trains_exactly_as_tl(bench2):
    """CLGAN's Fisher pairs and probes come from a stream of its own: at lambda 0 every draw of the run is TL's,
    so CLGAN settings compare on the same data."""
    _, zero = train("clgan", bench2, clgan_samples=8, clgan_lambda=0.0)
    _, tl = train("tl", bench2)
    assert zero.anchor.active
    for (name, a), (_, b) in zip(zero.ctx.G.named_parameters(), tl.ctx.G.named_parameters()):
        assert torch.equal(a, b), name


# ---- Thanh-Tung & Tran: EWC on the discriminator, re-estimated every N steps --------------------


def test_thanh_penalty_on_discriminator_and_pulls_it_back(bench2):
    records, m = train("thanh", bench2, thanh_every=STEPS, thanh_lambda=3.0)  # first estimate at the last step of task 1
    assert "d_extra" not in records[0].losses and "g_extra" not in records[0].losses
    assert records[1].losses["d_extra"] > 0
    assert m.anchor.active and records[1].memory["anchor"] > 0
    assert_penalty_is_the_anchored_quadratic(m.ctx.D, m, lambda: m.discriminator_loss(None), 3.0)


def test_thanh_reestimates_within_a_task_with_discount(bench2, monkeypatch):
    """Every 4 steps D's Fisher is estimated anew; what is kept is gamma * F_old + F_new (bfloat16), with theta*
    at D's weights of that step; the penalty acts from the first estimate on."""
    from assocgan.methods import thanh

    estimates, penalties = [], []
    fisher, loss = thanh.discriminator_fisher, thanh.ThanhTung.discriminator_loss

    def spy_fisher(D, x, y, fake, mode, gen):
        out = fisher(D, x, y, fake, mode, gen)
        estimates.append(({k: v.clone() for k, v in out.items()}, {k: p.detach().clone() for k, p in D.named_parameters()}))
        return out

    def spy_loss(self, step):
        out = loss(self, step)
        penalties.append((step.step, None if out is None else float(out.detach())))
        return out

    monkeypatch.setattr(thanh, "discriminator_fisher", spy_fisher)
    monkeypatch.setattr(thanh.ThanhTung, "discriminator_loss", spy_loss)
    gamma = 0.5
    records, m = train("thanh", Benchmark("one", "psnr", bench2.tasks[:1]), thanh_every=4, thanh_gamma=gamma)
    assert m.steps == STEPS and len(estimates) == STEPS // 4
    kept = None
    for new, _ in estimates:
        kept = {k: (v.float() if kept is None else gamma * kept[k].float() + v.float()).to(torch.bfloat16) for k, v in new.items()}
    assert set(m.anchor.stored_importance) == set(kept)
    for k in kept:
        assert torch.equal(m.anchor.stored_importance[k], kept[k]), k
    # the discount matters at this precision: the plain sum of the estimates is another importance
    plain = {k: sum(new[k] for new, _ in estimates) for k in kept}
    assert any(not torch.allclose(plain[k], kept[k].float(), rtol=0.05) for k in kept)
    last_weights = estimates[-1][1]
    assert all(torch.equal(m.anchor.stored_theta[k], last_weights[k].half()) for k in last_weights)
    # as in the original, it acts from the first estimate on (within the first task)
    assert [s for s, v in penalties if v is None] == [0, 1, 2, 3]
    assert all(v > 0 for s, v in penalties if s >= 4)
    assert records[0].losses["d_extra"] > 0


# ---- Liang et al.: path-integral (synaptic intelligence) importance on the discriminator --------


def test_liang_path_integral_penalty_pulls_discriminator_back(bench2):
    records, m = train("liang", bench2, liang_every=STEPS, liang_c=2.0)
    assert "d_extra" not in records[0].losses
    assert records[1].losses["d_extra"] > 0
    imp = torch.cat([v.float().flatten() for v in m.anchor.stored_importance.values()])
    assert (imp >= 0).all() and imp.sum() > 0  # the loss decrease the discriminator's updates produced
    assert set(records[1].memory) == {"anchor", "path"}
    assert_penalty_is_the_anchored_quadratic(m.ctx.D, m, lambda: m.discriminator_loss(None), 2.0)


def test_path_integral_importance_is_the_curvature_of_a_quadratic_walked_to_its_minimum():
    """Zenke et al.'s importance on L = h/2 (w - 0)^2 from w = 1 to (nearly) 0 is h: each weight's share of the
    loss decrease over its squared displacement, doubled, the curvature (the unit of the quadratic anchor)."""
    from assocgan.methods.helpers import PathIntegral

    lin = torch.nn.Linear(3, 1, bias=False)
    h = torch.tensor([2.0, 0.5, 0.0])  # the third weight does not change the loss
    with torch.no_grad():
        lin.weight.fill_(1.0)
    path = PathIntegral(lin, damping=1e-12)
    opt = torch.optim.SGD(lin.parameters(), lr=0.01)
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * h * lin.weight[0].pow(2)).sum().backward()
        path.record()
        lin.weight.grad.mul_(3.0)  # a penalty's gradient joining after record() speeds the walk; it is not integrated
        opt.step()
        path.accumulate()
    imp = path.consolidate()["weight"][0]
    assert imp[0] == pytest.approx(2.0, rel=0.05) and imp[1] == pytest.approx(0.5, rel=0.05) and imp[2] == 0


# ---- Lifelong GAN: distillation from the previous generator on auxiliary images ----------------


def test_auxiliary_images():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    m = montage(x, 4, gen)
    assert m.shape == x.shape
    # every 8 x 8 tile of the montage is a patch of one of the batch's images
    tile = m[0, :, :8, :8]
    assert any((x[i].unfold(1, 8, 1).unfold(2, 8, 1) == tile[:, None, None]).all(0).all(-1).all(-1).any() for i in range(4))
    h = swapped_halves(x, gen)
    assert h.shape == x.shape
    assert torch.equal(h[:, :, :16, 16:], x[:, :, :16, :16])  # top half kept, left and right swapped


def _half_copy(module):
    """A float32 copy of ``module`` with its weights rounded to float16 (a copy kept in float16)."""
    return copy.deepcopy(module).half().float()


def test_lifelonggan_distillation_pulls_outputs_towards_previous_generator(bench2):
    kept = []
    records, m = train("lifelonggan", bench2, on_task=lambda r: kept.append(copy.deepcopy(r.generator)), lifelonggan_lambda=0.7)
    assert "g_extra" not in records[0].losses
    assert records[1].losses["g_extra"] > 0
    G = m.ctx.G
    # the teacher is the generator of the previous task (task 2's, after the last task), kept in float16
    assert all(torch.equal(a, b.detach().half()) for a, b in zip(m.teacher.stored.parameters(), kept[-1].parameters()))
    # on the second task the teacher was task 1's generator: the distillation is the mean absolute difference
    # between G's and that generator's outputs on the auxiliary images (a montage of the sources, the targets)
    m.teacher = FrozenTeacher(kept[0])
    previous = _half_copy(kept[0])
    x, y = bench2.tasks[1].sample(4, torch.Generator().manual_seed(0))
    drift(G.parameters())

    def distil():
        m.ctx.gen.manual_seed(7)  # the same auxiliary images at each call
        return m.distillation(x, y)

    m.ctx.gen.manual_seed(7)
    aux = m.auxiliary(x, y)
    m.ctx.gen.manual_seed(7)
    assert torch.equal(aux, torch.cat([montage(x, m.settings.lifelonggan_grid, m.ctx.gen), y]))
    with torch.no_grad():
        hand = float((G(aux) - previous(aux)).abs().mean())
    before = distil()
    assert float(before.detach()) == pytest.approx(hand, rel=1e-5) and hand > 0
    m.ctx.gen.manual_seed(7)
    assert float(m.generator_loss(Step(1, 0, Batch.of(x, y, 1), None)).detach()) == pytest.approx(0.7 * hand, rel=1e-5)
    # a small step on it brings G's outputs towards the previous generator's
    pull([p for p in G.parameters()], distil, eps=1e-4)
    with torch.no_grad():
        assert float((G(aux) - previous(aux)).abs().mean()) < hand


# ---- LiSS: self-supervised auxiliary tasks on the encoder, distillation of its features --------


def test_rotation_and_jigsaw_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 48)  # not square: rotations use a square centre crop
    r, k = rotations(x, gen)
    assert r.shape == (6, 3, 32, 32)
    for img, kk, src in zip(r, k.tolist(), x[..., 8:40]):
        assert torch.equal(img, torch.rot90(src, kk, dims=(-2, -1)))
    j, label = jigsaw(x, gen)
    assert j.shape == x.shape and label.max() < len(JIGSAW_ORDERS)
    for img, lab, src in zip(j, label.tolist(), x):
        tiles = [src[:, :16, :24], src[:, :16, 24:], src[:, 16:, :24], src[:, 16:, 24:]]
        out = [img[:, :16, :24], img[:, :16, 24:], img[:, 16:, :24], img[:, 16:, 24:]]
        assert all(torch.equal(o, tiles[int(i)]) for o, i in zip(out, JIGSAW_ORDERS[lab]))


def test_liss_heads_learn_their_task(bench2):
    cfg = make_config("smoke", threads=1)
    torch.manual_seed(0)
    G, D = build_networks(cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    ctx = Context(cfg, G, D, gen, 1, ["t"], lambda: torch.autocast("cpu", enabled=False))
    m = get_method("liss")(ctx, liss_aux="rotation,jigsaw")
    opt = torch.optim.Adam(list(m.g_parameters()), lr=1e-3)
    task = bench2.tasks[0]
    for s in range(160):
        x, y = task.sample(16, gen)
        loss = m.generator_loss(Step(0, s, Batch.of(x, y, 0), None))  # no reference yet: the auxiliary losses alone
        opt.zero_grad()
        loss.backward()
        opt.step()
    # fresh rotations and tile orders of the task's images (there are only 16 of them at the smoke preset)
    x, _ = task.sample(256, gen)
    with torch.no_grad():
        r, k = rotations(x, gen)
        acc_rot = float((m.heads["rotation"](encode(G.down, r)[-1]).argmax(1) == k).float().mean())
        j, lab = jigsaw(x, gen)
        acc_jig = float((m.heads["jigsaw"](encode(G.down, j)[-1]).argmax(1) == lab).float().mean())
    assert acc_rot > 0.5  # chance 1/4 (about 0.8 measured)
    assert acc_jig > 2.5 / 24  # chance 1/24 (about 4/24 measured)


def _features(stages, x):
    """The encoder's features at its four levels, each stage run on the previous one's output."""
    feats, z = [], x * 2 - 1
    for stage in stages:
        z = stage(z)
        feats.append(z.clone())
    # the decoder reads a level through its skip after the next stage's leading activation
    return [stages[i + 1][0](f.clone()) if i + 1 < len(stages) else f for i, f in enumerate(feats)]


def test_liss_distillation_acts_after_first_task_and_pulls_encoder_back(bench2, monkeypatch):
    from assocgan.methods.liss import LiSS

    kept, seen = [], []
    original = LiSS.distillation

    def hand(encoder, reference, x):
        with torch.no_grad():
            a, b = _features(encoder, x), _features(reference, x)
        return sum(float((fa - fb).abs().mean()) for fa, fb in zip(a, b)) / len(a)

    def spy(self, x, feats=None):
        out = original(self, x, feats)
        if out is not None:  # while the second task trains: against the encoder kept after the first
            seen.append((float(out.detach()), hand(self.ctx.G.down, _half_copy(kept[0]), x)))
        return out

    monkeypatch.setattr(LiSS, "distillation", spy)
    records, m = train("liss", bench2, on_task=lambda r: kept.append(copy.deepcopy(r.generator.down)))
    assert len(seen) == STEPS  # called with a reference only while the second task trains
    for got, want in seen:
        assert want > 0 and got == pytest.approx(want, rel=1e-4)
    assert set(records[1].memory) == {"heads", "encoder"}
    assert set(m.g_parameters()) >= set(m.heads.parameters())  # the heads are trained with the generator
    # after the last task the reference is its encoder, in float16
    assert all(torch.equal(a, b.detach().half()) for a, b in zip(m.reference.stored.parameters(), kept[-1].parameters()))
    monkeypatch.setattr(LiSS, "distillation", original)
    G = m.ctx.G
    x, _ = bench2.tasks[1].sample(4, torch.Generator().manual_seed(0))
    drift(G.down.parameters())
    assert float(m.distillation(x).detach()) == pytest.approx(hand(G.down, _half_copy(kept[-1]), x), rel=1e-4)
    # its gradient reaches the encoder only (the decoder is not held), and a small step pulls the encoder back
    grads = torch.autograd.grad(m.distillation(x), list(G.parameters()), allow_unused=True)
    down = {id(p) for p in G.down.parameters()}
    assert all(g is None or not g.any() for p, g in zip(G.parameters(), grads) if id(p) not in down)
    assert all(g is not None and g.any() for p, g in zip(G.parameters(), grads) if id(p) in down)
    before = hand(G.down, _half_copy(kept[-1]), x)
    pull(list(G.down.parameters()), lambda: m.distillation(x), eps=1e-4)
    assert hand(G.down, _half_copy(kept[-1]), x) < before
    # with --liss-ema a < 1 the next reference is a * encoder + (1 - a) * reference, kept in float16
    old = {k: v.clone() for k, v in m.reference.model.state_dict().items()}
    m.settings.liss_ema = 0.25
    m.after_task(2, bench2.tasks[1])
    new = G.down.state_dict()
    for k, v in m.reference.stored.state_dict().items():
        assert torch.equal(v, (0.25 * new[k] + 0.75 * old[k]).half()), k


# ---- memory: the bytes each method claims per weight, from the networks' sizes -----------------------


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name,opts", [("clgan", {"clgan_samples": 8}), ("thanh", {"thanh_every": 2}), ("liang", {"liang_every": 2}), ("lifelonggan", {}), ("liss", {})]
)
def test_memory_is_the_bytes_each_method_claims_per_weight(bench2, name, opts):
    """CLGAN: theta* float16 + F bfloat16 of every G weight (4 bytes); Thanh-Tung & Tran: the same of every D
    weight; Liang et al.: that (4) plus the running segment's path integral, recorded gradient and two copies
    of D's weights in float32 (16); Lifelong GAN: the previous G in float16 (2); LiSS: the reference encoder in
    float16 (2 a weight of G's encoder) and the auxiliary heads in float32 (4)."""
    records, m = train(name, bench2, steps=2, **opts)
    n_g, n_d = _count(m.ctx.G), _count(m.ctx.D)
    want = {
        "clgan": lambda: {"anchor": 4 * n_g},
        "thanh": lambda: {"anchor": 4 * n_d},
        "liang": lambda: {"anchor": 4 * n_d, "path": 16 * n_d},
        "lifelonggan": lambda: {"teacher": 2 * n_g},
        "liss": lambda: {"encoder": 2 * _count(m.ctx.G.down), "heads": 4 * _count(m.heads)},
    }[name]()
    assert records[-1].memory == want
    assert m.memory_bytes() == sum(want.values())
    if name in ("clgan", "thanh", "liang"):
        assert {v.dtype for v in m.anchor.stored_theta.values()} == {torch.float16}
        assert {v.dtype for v in m.anchor.stored_importance.values()} == {torch.bfloat16}
    if name in ("lifelonggan", "liss"):
        kept = m.teacher if name == "lifelonggan" else m.reference
        assert {p.dtype for p in kept.stored.parameters()} == {torch.float16}


# ---- all five through the CLI -------------------------------------------------------------------


def test_cli_smoke_run_of_all_five(tmp_path):
    from assocgan.cli import main

    names = ["clgan", "thanh", "liang", "lifelonggan", "liss"]
    out = tmp_path / "run"
    rc = main(
        [
            "run",
            "--preset",
            "smoke",
            "--steps",
            "6",
            "--threads",
            "1",
            "--methods",
            ",".join(names),
            "--thanh-every",
            "3",
            "--liang-every",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == names
    for name in names:
        entry = res["methods"][name]
        assert entry["complete"] and len(entry["matrix"]) == len(res["tasks"])
        assert entry["memory_bytes"] > 0


def test_discriminator_methods_refuse_a_run_without_the_adversarial_term(tmp_path, capsys):
    from assocgan.cli import main

    for name in ("thanh", "liang"):
        out = tmp_path / name
        rc = main(["run", "--preset", "smoke", "--lambda-adv", "0", "--methods", f"tl,{name}", "--out", str(out)])
        assert rc == 2
        err = capsys.readouterr().err
        assert name in err and "--lambda-adv" in err
        assert not (out / "results.json").exists()  # refused before anything was trained
