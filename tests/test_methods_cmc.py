"""CMC: convolution kernels built per task from a growing bank of filter atoms and per-task coefficients, on tiny
runs (preset smoke: 32 px, ngf 8)."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import pertask
from assocgan.checkpoints import load_generator
from assocgan.cli import main
from assocgan.config import make_config
from assocgan.errors import UserError
from assocgan.evaluate import predict
from assocgan.memory import module_bytes
from assocgan.methods import Context, get_method
from assocgan.methods.cmc import CmcConv, TaskNorm
from assocgan.nets import UNet
from assocgan.rng import side_stream
from assocgan.runner import benchmark_for
from assocgan.train import build_networks, train_method
from pertask import check_a_restored_state_answers_the_same


def smoke(**kw):
    return pertask.smoke("cmc", **kw)


def plain_generator(cfg) -> nn.Module:
    return UNet(3, 3, cfg.ngf, norm=cfg.norm, residual=cfg.residual, context=cfg.context)


def plain_kernel_bytes(ngf: int) -> int:
    return sum(m.weight.numel() * 4 for m in UNet(3, 3, ngf).modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def task_tensors(G, j: int) -> dict[str, torch.Tensor]:
    """Everything task j keeps: its atoms, coefficients, biases and normalisation layers (parameters and buffers)."""
    out = {}
    for i, m in enumerate(G.layers()):
        if isinstance(m, CmcConv):
            out[f"{i}.atoms"], out[f"{i}.coef"] = m.atoms[j].detach().clone(), m.coef[j].detach().clone()
            if m.has_bias:
                out[f"{i}.bias"] = m.bias[j].detach().clone()
        else:
            out.update({f"{i}.{k}": v.detach().clone() for k, v in m.norms[j].state_dict().items()})
    return out


def _method(cfg, seed_weights: int = 1):
    """A cmc method on a fresh generator whose task-1 coefficients are all random (no zero last layer), for exact checks."""
    G, D = build_networks(cfg, torch.device("cpu"), get_method("cmc"))
    g = torch.Generator().manual_seed(seed_weights)
    with torch.no_grad():
        for c in G.convs():
            c.coef[0].copy_(torch.randn(c.coef[0].shape, generator=g) * 0.3)
    ctx = Context(cfg, G, D, torch.Generator().manual_seed(0), 4, ["a", "b", "c", "d"], contextlib.nullcontext)
    return get_method("cmc")(ctx, **cfg.method_options.get("cmc", {}))


def _perturb(m, t: int) -> None:
    pertask.perturb(m, t, seed=10)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_old_tasks_never_change_and_the_memory_is_what_is_kept(norm):
    cfg, bench = smoke(steps=3, order="1,2,3", norm=norm)
    x1 = bench.tasks[0].test_pairs()[0]
    outs, kept, mems = [], [], []

    def on_task(rec):
        G, m = rec.generator, rec.method
        outs.append(predict(m.eval_generator(0), x1))
        kept.append([task_tensors(G, j) for j in range(rec.t + 1)])
        mems.append(rec.memory)
        # what it keeps: the plain generator less its kernels (which the bank and coefficients stand in for), plus the memory
        assert sum(rec.memory.values()) == module_bytes(G) - module_bytes(plain_generator(cfg)) + plain_kernel_bytes(cfg.ngf)

    recs = train_method("cmc", bench, cfg, on_task=on_task)
    assert recs[-1].method.needs_task_id
    for t in (1, 2):
        assert torch.equal(outs[t], outs[0])  # task 1's answer, bit for bit, after each later task
        for j in range(t):  # every tensor an earlier task kept is as that task left it
            assert kept[t][j].keys() == kept[j][j].keys()
            for k in kept[j][j]:
                assert torch.equal(kept[t][j][k], kept[j][j][k]), (t, j, k)
    convs = recs[-1].generator.convs()
    atoms = sum(c.m * c.fan_in * 4 for c in convs)
    coef = [sum(c.n_out * c.m * (t + 1) * 4 for c in convs) for t in range(3)]
    for t, mem in enumerate(mems):
        assert mem["atoms"] == (t + 1) * atoms and mem["coefficients"] == sum(coef[: t + 1])
    assert mems[0]["task_biases_norms"] == 0 < mems[1]["task_biases_norms"] < mems[2]["task_biases_norms"]
    for c in convs:  # task 3's atoms trained away from their draw
        drawn = (torch.rand(c.m, c.fan_in, generator=side_stream(cfg.seed, "cmc", 2)) * 2 - 1) * (1.0 / math.sqrt(c.fan_in))
        assert not torch.equal(c.atoms[2], drawn)
    assert all(c.coef[2][:, -c.m :].abs().sum() > 0 for c in convs)  # task 3's coefficients on its own atoms trained


def test_kernels_are_the_coefficients_over_the_bank():
    cfg, bench = smoke(opts={"cmc_atoms": 4})
    m = _method(cfg)
    x = bench.tasks[0].test_pairs()[0]
    for t in range(3):
        m.before_task(t, bench.tasks[t])
        _perturb(m, t)
        m.after_task(t, bench.tasks[t])
    G = m.ctx.G
    for t in range(3):
        plain = plain_generator(cfg)
        plain_convs = [c for c in plain.modules() if isinstance(c, (nn.Conv2d, nn.ConvTranspose2d))]
        plain_norms = [c for c in plain.modules() if isinstance(c, nn.InstanceNorm2d)]
        with torch.no_grad():
            for c, p in zip(G.convs(), plain_convs, strict=True):
                assert c.coef[t].shape == (c.n_out, (t + 1) * c.m)
                # filter i of task t: sum over the atoms of tasks 1..t+1 of coefficient (i, a) times atom a
                atoms = [row for k in range(t + 1) for row in c.atoms[k]]
                w = torch.stack([sum(c.coef[t][i, a] * atoms[a] for a in range(len(atoms))) for i in range(c.n_out)])
                w = w.view(c.shape)  # filter-major: (C_out, C_in, kh, kw)
                p.weight.copy_(w.transpose(0, 1) if c.transposed else w)
                assert torch.allclose(c.filters(t), w, atol=1e-6)
                p.bias.copy_(c.bias[t])
            for n, p in zip([n for n in G.layers() if isinstance(n, TaskNorm)], plain_norms, strict=True):
                p.load_state_dict(n.norms[t].state_dict())
        assert torch.allclose(predict(m.eval_generator(t), x), predict(plain, x), atol=1e-5), t


def test_a_later_task_trains_its_coefficients_and_new_atoms_only():
    cfg, bench = smoke(context=True)  # with the global context: parameters that no task trains
    m = _method(cfg)
    G = m.ctx.G
    x, y = bench.tasks[0].test_pairs()
    m.before_task(0, bench.tasks[0])
    assert {id(p) for p in G.parameters() if p.requires_grad} == {id(p) for p in G.task_parameters(0)} == {id(p) for p in m.g_parameters()}
    assert not any(p.requires_grad for p in G.net.context.parameters())
    m.after_task(0, bench.tasks[0])
    first = predict(m.eval_generator(0), x)
    gen_state = m.ctx.gen.get_state()
    m.before_task(1, bench.tasks[1])
    assert torch.equal(m.ctx.gen.get_state(), gen_state)  # the run's stream is left alone
    c0 = G.convs()[0]  # the new atoms come from the side stream of task 2
    want = (torch.rand(c0.m, c0.fan_in, generator=side_stream(cfg.seed, "cmc", 1)) * 2 - 1) * (1.0 / math.sqrt(c0.fan_in))
    assert torch.equal(c0.atoms[1], want)
    own = {id(p) for p in G.task_parameters(1)}
    assert {id(p) for p in m.g_parameters()} == own
    assert not own & {id(p) for c in G.convs() for p in (c.atoms[0], c.coef[0], c.bias[0] if c.has_bias else c.coef[0])}  # task 1's: frozen
    assert all(id(p) in own for c in G.convs() for p in (c.atoms[1], c.coef[1]))
    assert all(p.requires_grad == (id(p) in own) for p in G.parameters())
    # the new task starts at the previous task's network: its coefficients are task 1's and zeros on its new atoms
    assert torch.allclose(predict(m.eval_generator(1), x), first, atol=1e-6)
    for c in G.convs():
        assert torch.equal(c.coef[1][:, : c.m], c.coef[0]) and not c.coef[1][:, c.m :].any()
    with torch.no_grad():  # coefficients on the new atoms, so that the atoms have a gradient too
        for c in G.convs():
            c.coef[1][:, c.m :].normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    G.train()
    G.task = 1
    ((G(x) - y) ** 2).mean().backward()
    for k, p in G.named_parameters():
        if id(p) in own:
            assert p.grad is not None and p.grad.abs().sum() > 0, k
        else:
            assert p.grad is None, k
    assert torch.equal(predict(m.eval_generator(0), x), first)


def test_the_state_restored_answers_the_same_and_so_do_the_checkpoints():
    cfg, bench = smoke(opts={"cmc_atoms": 3})
    check_a_restored_state_answers_the_same("cmc", _method, cfg, bench, seed=10)


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "x"])
def test_the_atoms_option_refuses_bad_values(value):
    with pytest.raises(UserError, match="--cmc-atoms"):
        get_method("cmc").resolve_options({"cmc_atoms": value})


def test_the_atoms_are_capped_at_the_layers_rank():
    cfg, _ = smoke(opts={"cmc_atoms": 1000})
    G = get_method("cmc").build_generator(cfg)
    assert [c.m for c in G.convs()] == [min(c.n_out, c.fan_in) for c in G.convs()]


def test_run_smoke_with_tl_and_cmc(tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "--preset", "smoke", "--methods", "tl,cmc", "--order", "1,2", "--threads", "1", "--seed", "0", "--out", str(out), "--tensorboard", "off"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    entry = res["methods"]["cmc"]
    assert entry["complete"] and entry["task_id_at_test"] is True
    assert res["methods"]["tl"]["task_id_at_test"] is False
    cfg = make_config("smoke")
    plain = module_bytes(plain_generator(cfg)) - plain_kernel_bytes(cfg.ngf)
    for t, task in enumerate(res["tasks"]):  # the memory is what the checkpoint holds beyond the plain generator's other tensors
        state = load_file(str(out / "checkpoints" / "cmc" / f"task{t + 1}_{task}.safetensors"))
        assert entry["memory_by_task"][t] == sum(v.numel() * v.element_size() for v in state.values()) - plain
    assert entry["matrix"][1][0] == entry["matrix"][0][0]  # no forgetting
    bench = benchmark_for(make_config("smoke", order="1,2"))
    x = bench.tasks[0].test_pairs()[0]
    first = predict(load_generator(out, "cmc", after_task=1, task=1), x)
    assert torch.equal(predict(load_generator(out, "cmc", task=1), x), first)
    assert not torch.equal(predict(load_generator(out, "cmc", task=2), x), first)


def test_task_one_starts_at_the_generators_initial_scale_and_as_the_identity():
    cfg, bench = smoke()
    G = get_method("cmc").build_generator(cfg)
    convs = G.convs()
    stds = [float(c.filters(0).detach().std()) for c in convs[:-1]]
    assert all(0.012 < s < 0.03 for s in stds), stds  # pix2pix's N(0, 0.02), built from the bank
    assert not convs[-1].filters(0).any()  # the residual U-Net's zero last layer: the untrained network is the identity
    x = bench.tasks[0].test_pairs()[0]
    assert torch.equal(predict(G, x), predict(plain_generator(cfg), x))
