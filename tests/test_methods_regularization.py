"""The regularisation and distillation baselines (clgan, thanh, liang, lifelonggan, liss): each mechanism acts.

For each method, trained by the real loop on two tiny tasks: its extra loss is absent while the first task
trains and present (non-zero) on the second; a gradient step on that term alone pulls the weights (or the
outputs, or the encoder's features) towards the ones kept after the first task. LiSS's auxiliary heads learn
their task. And a smoke run of all five through the CLI writes results.json.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from assocgan.config import make_config
from assocgan.data.benchmarks import Benchmark
from assocgan.methods import Batch, Context, Step, get_method
from assocgan.methods.lifelonggan import montage, swapped_halves
from assocgan.methods.liss import JIGSAW_ORDERS, encode, jigsaw, rotations
from assocgan.runner import benchmark_for
from assocgan.train import build_networks, train_method

STEPS = 12


@pytest.fixture(scope="module")
def bench2():
    cfg = make_config("smoke", threads=1)
    full = benchmark_for(cfg)
    return Benchmark("restore2", full.metric, full.tasks[:2])


def train(name, bench, **opts):
    cfg = make_config("smoke", threads=1, steps=STEPS, methods=[name], method_options={name: opts})
    records = train_method(name, bench, cfg, device=torch.device("cpu"))
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
            p.add_(scale * p.std().nan_to_num(0) * torch.randn_like(p))


def offsets(model, anchor):
    params = dict(model.named_parameters())
    return {k: (params[k] - t.float()).detach() for k, t in anchor.stored_theta.items()}


def assert_pulls_towards_anchor(model, method, penalty, weight):
    """A plain gradient step on the penalty alone, with the largest safe rate 1 / (weight * max importance),
    moves no weight away from theta* and brings the weights and the penalty down."""
    named = dict(model.named_parameters())
    keys = list(method.anchor.stored_theta)
    f_max = max(float(method.anchor.stored_importance[k].float().max()) for k in keys)
    before, off_before = float(penalty().detach()), offsets(model, method.anchor)
    assert before > 0
    grads = torch.autograd.grad(penalty(), [named[k] for k in keys])
    with torch.no_grad():
        for k, g in zip(keys, grads):
            named[k].sub_(g / (weight * f_max))
    off_after = offsets(model, method.anchor)
    assert float(penalty().detach()) < before
    assert all((off_after[k].abs() <= off_before[k].abs() + 1e-7).all() for k in keys)
    assert sum(float(v.norm()) for v in off_after.values()) < sum(float(v.norm()) for v in off_before.values())


# ---- CLGAN: EWC on the generator -----------------------------------------------------------------


def test_clgan_penalty_acts_after_first_task_and_pulls_generator_back(bench2):
    records, m = train("clgan", bench2, clgan_samples=16)
    assert "g_extra" not in records[0].losses  # no penalty while the first task trains
    assert records[1].losses["g_extra"] > 0
    # the importance is rescaled to the content loss's curvature: far from the minute raw Fisher
    imp = torch.cat([v.float().flatten() for v in m.anchor.stored_importance.values()])
    assert imp.max() > 1e-3 and (imp >= 0).all()
    assert records[1].memory["anchor"] > 0
    assert_pulls_towards_anchor(m.ctx.G, m, lambda: m.generator_loss(None), m.opt.clgan_lambda)


# ---- Thanh-Tung & Tran: EWC on the discriminator, re-estimated every N steps --------------------


def test_thanh_penalty_on_discriminator_and_pulls_it_back(bench2):
    records, m = train("thanh", bench2, thanh_every=STEPS)  # first estimate at the last step of task 1
    assert "d_extra" not in records[0].losses and "g_extra" not in records[0].losses
    assert records[1].losses["d_extra"] > 0
    assert m.anchor.active and records[1].memory["anchor"] > 0
    assert_pulls_towards_anchor(m.ctx.D, m, lambda: m.discriminator_loss(None), m.opt.thanh_lambda)


def test_thanh_reestimates_within_a_task_with_discount(bench2):
    records, m = train("thanh", Benchmark("one", "psnr", bench2.tasks[:1]), thanh_every=4, thanh_gamma=0.5)
    assert records[0].losses["d_extra"] > 0  # as in the original, it acts from the first re-estimate on
    assert m.steps == STEPS


# ---- Liang et al.: path-integral (synaptic intelligence) importance on the discriminator --------


def test_liang_path_integral_penalty_pulls_discriminator_back(bench2):
    records, m = train("liang", bench2, liang_every=STEPS)
    assert "d_extra" not in records[0].losses
    assert records[1].losses["d_extra"] > 0
    imp = torch.cat([v.float().flatten() for v in m.anchor.stored_importance.values()])
    assert (imp >= 0).all() and imp.sum() > 0  # the loss decrease the discriminator's updates produced
    assert set(records[1].memory) == {"anchor", "path"}
    assert_pulls_towards_anchor(m.ctx.D, m, lambda: m.discriminator_loss(None), m.opt.liang_c)


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


def test_lifelonggan_distillation_pulls_outputs_towards_previous_generator(bench2):
    records, m = train("lifelonggan", bench2)
    assert "g_extra" not in records[0].losses
    assert records[1].losses["g_extra"] > 0
    assert records[1].memory["teacher"] > 0
    x, y = bench2.tasks[1].sample(4, torch.Generator().manual_seed(0))

    def distil():
        m.ctx.gen.manual_seed(7)  # the same auxiliary images at each call
        return m.distillation(x, y)

    drift(m.ctx.G.parameters())
    before = float(distil().detach())
    assert before > 0
    pull([p for p in m.ctx.G.parameters()], distil, eps=1e-4)
    assert float(distil().detach()) < before


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


def test_liss_distillation_acts_after_first_task_and_pulls_encoder_back(bench2, monkeypatch):
    from assocgan.methods.liss import LiSS

    seen = []
    original = LiSS.distillation

    def spy(self, x, feats=None):
        out = original(self, x, feats)
        seen.append((self.ctx.G.training, None if out is None else float(out.detach())))
        return out

    monkeypatch.setattr(LiSS, "distillation", spy)
    records, m = train("liss", bench2)
    during = [v for _, v in seen]
    assert len(during) == STEPS and all(v > 0 for v in during)  # called only while the second task trains
    assert set(records[1].memory) == {"heads", "encoder"}
    assert set(m.g_parameters()) >= set(m.heads.parameters())  # the heads are trained with the generator
    x, _ = bench2.tasks[1].sample(4, torch.Generator().manual_seed(0))
    monkeypatch.setattr(LiSS, "distillation", original)
    drift(m.ctx.G.down.parameters())
    before = float(m.distillation(x).detach())
    pull(list(m.ctx.G.down.parameters()), lambda: m.distillation(x), eps=1e-4)
    assert float(m.distillation(x).detach()) < before


# ---- all five through the CLI -------------------------------------------------------------------


def test_cli_smoke_run_of_all_five(tmp_path):
    from assocgan.cli import main

    names = ["clgan", "thanh", "liang", "lifelonggan", "liss"]
    out = tmp_path / "run"
    rc = main(["run", "--preset", "smoke", "--steps", "6", "--threads", "1", "--methods", ",".join(names),
               "--thanh-every", "3", "--liang-every", "3", "--out", str(out)])
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
