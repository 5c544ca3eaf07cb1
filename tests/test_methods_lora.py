"""LoRA adapters: a generator frozen after task 1 and per-task low-rank updates of its kernels, on tiny runs
(preset smoke: 32 px, ngf 8)."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from safetensors.torch import load_file

import pertask
from assocgan.checkpoints import load_generator
from assocgan.cli import main
from assocgan.config import make_config
from assocgan.errors import UserError
from assocgan.evaluate import predict
from assocgan.memory import module_bytes
from assocgan.methods import Context, get_method
from assocgan.methods.lora import LoraConv
from assocgan.metrics import scores
from assocgan.nets import UNet
from assocgan.runner import benchmark_for
from assocgan.train import build_networks, train_method
from pertask import check_a_restored_state_answers_the_same


def smoke(**kw):
    return pertask.smoke("lora", **kw)


def base_tensors(G) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in G.state_dict().items() if ".lora_" not in k}


def test_the_generator_is_frozen_after_task_one_and_task_one_never_changes():
    cfg, bench = smoke(steps=3, order="1,2,3")
    x1 = bench.tasks[0].test_pairs()[0]
    x2 = bench.tasks[1].test_pairs()[0]
    outs, bases, mems, frozen2 = [], [], [], []

    def on_task(rec):
        G, m = rec.generator, rec.method
        outs.append(predict(m.eval_generator(0), x1))
        bases.append(base_tensors(G))
        mems.append(rec.memory)
        if rec.t == 1:
            frozen2.append(predict(m.eval_generator(0), x2))  # task 2's inputs through the frozen generator alone
            assert not torch.equal(predict(m.eval_generator(1), x2), frozen2[0])  # task 2 answers with its adapters
        # what it keeps beyond the plain generator every method has, exactly
        assert sum(rec.memory.values()) == module_bytes(G) - module_bytes(UNet(3, 3, cfg.ngf))

    recs = train_method("lora", bench, cfg, on_task=on_task)
    assert recs[-1].method.needs_task_id
    for t in (1, 2):
        assert torch.equal(outs[t], outs[0])  # task 1's answer, bit for bit, after each later task
        assert bases[t].keys() == bases[0].keys()
        for k in bases[0]:  # every tensor of the generator (parameters and buffers) as task 1 left it
            assert torch.equal(bases[t][k], bases[0][k]), k
    convs = [c for c in recs[-1].generator.modules() if isinstance(c, LoraConv)]
    per_task = sum(4 * (c.fan_in + c.n_out) * 4 for c in convs)  # r (C_in k k + C_out) float32 per convolution
    assert [sum(m.values()) for m in mems] == [0, per_task, 2 * per_task]
    assert all(c.lora_B[0].abs().sum() > 0 for c in convs)  # task 2's updates trained


def _method(cfg, seed_weights: int = 1):
    """A lora method on a fresh generator whose kernels are all random (no zero last layer), for exact checks."""
    G, D = build_networks(cfg, torch.device("cpu"), get_method("lora"))
    g = torch.Generator().manual_seed(seed_weights)
    with torch.no_grad():
        for c in G.layers():
            c.base.weight.copy_(torch.randn(c.base.weight.shape, generator=g) * 0.1)
    ctx = Context(cfg, G, D, torch.Generator().manual_seed(0), 4, ["a", "b", "c", "d"], contextlib.nullcontext)
    return get_method("lora")(ctx, **cfg.method_options.get("lora", {}))


def test_a_new_task_starts_at_the_frozen_generator_and_its_adapter_acts():
    cfg, bench = smoke()
    m = _method(cfg)
    x = bench.tasks[0].test_pairs()[0]
    m.before_task(0, bench.tasks[0])
    assert {id(p) for p in m.g_parameters()} == {id(p) for p in m.ctx.G.base_parameters()}  # task 1 trains the generator
    m.after_task(0, bench.tasks[0])
    frozen = predict(m.eval_generator(0), x)
    m.before_task(1, bench.tasks[1])
    trained = list(m.g_parameters())
    assert len(trained) == 2 * len(m.ctx.G.layers())  # only task 2's A and B
    assert all(p.requires_grad for p in trained) and not any(p.requires_grad for p in m.ctx.G.base_parameters())
    assert torch.equal(predict(m.eval_generator(1), x), frozen)  # zero update: exactly the frozen generator
    with torch.no_grad():  # the adapter is wired in: a nonzero B changes the answer of task 2 only
        for c in m.ctx.G.layers():
            c.lora_B[0].normal_(0, 0.1)
    assert not torch.equal(predict(m.eval_generator(1), x), frozen)
    assert torch.equal(predict(m.eval_generator(0), x), frozen)


def test_the_adapters_restored_from_a_state_answer_the_same():
    cfg, bench = smoke(opts={"lora_rank": 2, "lora_alpha": 3.0})
    check_a_restored_state_answers_the_same("lora", _method, cfg, bench)


def test_without_the_full_first_task_the_initial_generator_stays_and_task_one_has_adapters(monkeypatch):
    cfg, bench = smoke(steps=2, order="1,2", opts={"lora_full_first": "off"})
    cls = get_method("lora")
    original, init = cls.before_task, []

    def spy(self, t, task):
        if t == 0:
            init.append(base_tensors(self.ctx.G))  # the generator as the run built it
        original(self, t, task)
        assert not any(p.requires_grad for p in self.ctx.G.base_parameters())

    monkeypatch.setattr(cls, "before_task", spy)
    recs = train_method("lora", bench, cfg)
    G = recs[-1].generator
    assert G.n_adapters == 2
    after = base_tensors(G)
    assert after.keys() == init[0].keys() and all(torch.equal(after[k], init[0][k]) for k in after)
    assert 0 < sum(recs[0].memory.values()) < sum(recs[1].memory.values())


def test_batch_norm_is_refused():
    cfg = make_config("smoke", threads=1, methods=["lora"], norm="batch")
    with pytest.raises(UserError, match="--norm instance"):
        get_method("lora").check_config(cfg)


def test_run_smoke_with_tl_and_lora(tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "--preset", "smoke", "--methods", "tl,lora", "--benchmark", "restore4", "--order", "1,2", "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    entry = res["methods"]["lora"]
    assert entry["complete"] and entry["task_id_at_test"] is True
    cfg = make_config("smoke")
    tasks = res["tasks"]
    plain = module_bytes(UNet(3, 3, cfg.ngf))
    for t, task in enumerate(tasks):  # the memory is what the checkpoint holds beyond the plain generator
        state = load_file(str(out / "checkpoints" / "lora" / f"task{t + 1}_{task}.safetensors"))
        assert entry["memory_by_task"][t] == sum(v.numel() * v.element_size() for v in state.values()) - plain
    assert entry["matrix"][1][0] == entry["matrix"][0][0]  # no forgetting
    # the checkpoints answer task j with task j's adapters, as the run evaluated them
    bench = benchmark_for(make_config("smoke", order="1,2"))
    first = load_generator(out, "lora", after_task=1, task=1)
    for j, task in enumerate(bench.tasks):
        G = load_generator(out, "lora", task=j + 1)
        x, y = task.test_pairs()
        got = predict(G, x)
        want = float(scores(got, y, make_config("smoke").convention())["psnr"].mean())
        assert entry["matrix"][-1][j] == pytest.approx(want, abs=1e-4), j
        if j == 0:
            assert torch.equal(got, predict(first, x))
        else:
            assert not torch.equal(got, predict(first, x))
    # ``assocgan translate --task``: task 1's answer is the same after task 2 as after task 1, task 2's is its own
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(bench.tasks[1].test_x[0].permute(1, 2, 0).numpy()).save(inputs / "img.png")
    written = {}
    for args in (["--task", "1", "--after-task", "1"], ["--task", "1"], ["--task", "2"]):
        dest = tmp_path / "out" / "_".join(args)
        assert main(["translate", str(out), str(inputs), "--method", "lora", "--out", str(dest), *args]) == 0
        written[" ".join(args)] = (dest / "img.png").read_bytes()
    assert written["--task 1 --after-task 1"] == written["--task 1"] != written["--task 2"]
