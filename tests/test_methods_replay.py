"""The replay and architecture baselines: replay, mergan, lvaegan, piggyback. Each test shows the method's
mechanism acting, on tiny runs (preset smoke: 32 px, ngf 8)."""

from __future__ import annotations

import json

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config
from assocgan.evaluate import predict
from assocgan.memory import module_bytes
from assocgan.methods import Batch, Step
from assocgan.methods.lvaegan import SourceEncoder
from assocgan.methods.mergan import SourceCritic, SourceGenerator, image_statistics
from assocgan.methods.piggyback import PiggybackConv
from assocgan.methods.replay import Replay
from assocgan.metrics import scores
from assocgan.nets import UNet
from assocgan.runner import benchmark_for
from assocgan.train import train_method


def smoke(method: str, **kw):
    opts = kw.pop("opts", {})
    cfg = make_config("smoke", threads=1, methods=[method], method_options={method: opts}, **kw)
    return cfg, benchmark_for(cfg)


def train(method: str, **kw):
    cfg, bench = smoke(method, **kw)
    seen = []
    recs = train_method(method, bench, cfg, on_task=seen.append)
    return cfg, bench, recs


# ---- replay ------------------------------------------------------------------------------------------
def test_replay_stores_real_pairs_of_past_tasks_within_a_byte_budget(monkeypatch):
    budget = 50_000
    seen = []  # every batch drawn while training: (task, replayed (task, row), y, the stored targets then)
    original = Replay.batch

    def spy(self, t, task):
        b = original(self, t, task)
        seen.append((t, self.last_replayed, b.y.clone(), [sy.clone() for _, sy in self.stores]))
        return b

    monkeypatch.setattr(Replay, "batch", spy)
    cfg, bench, recs = train("replay", steps=10, opts={"replay_bytes": budget})
    m = recs[-1].method
    pair = bench.tasks[0].pair_bytes(1)
    # the budget is shared evenly among the past tasks: older stores shrink as tasks arrive
    for t, rec in enumerate(recs):
        assert rec.memory["pairs"] <= budget
        assert rec.memory["pairs"] == (t + 1) * (budget // (t + 1) // pair) * pair
    assert [x.shape[0] for x, _ in m.stores] == [budget // 4 // pair] * 4
    assert m.memory()["pairs"] == sum(x.numel() + y.numel() for x, y in m.stores)
    for k, ((x, y), idx) in enumerate(zip(m.stores, m.source_index)):
        task = bench.tasks[k]
        assert x.dtype == y.dtype == torch.uint8
        assert torch.equal(y, task.train_y[idx])  # real training targets of that task
        assert torch.equal(x, task.train_x[idx])  # exactly the task's own stored pairs, as a dataset holds them
    # every replayed pair of every batch comes from the memory of a past task
    n_replayed, expected = 0, 0.0
    for t, (tasks, rows), y, stored in seen:
        n = tasks.shape[0]
        assert y.shape[0] == cfg.batch_size
        assert (tasks < t).all()
        for i, (k, r) in enumerate(zip(tasks.tolist(), rows.tolist())):
            want, got = stored[k][r].float() / 255, y[cfg.batch_size - n + i]
            assert torch.equal(got, want) or torch.equal(got, want.flip(-1))
        n_replayed += n
        expected += t / (t + 1) * cfg.batch_size  # the default share: t / (t + 1), as JL
    assert abs(n_replayed - expected) < 0.15 * expected


@pytest.fixture(scope="module")
def smoke_bench():
    return smoke("replay")


@pytest.mark.parametrize("quota,per_task", [(3, 3), (1, 1), (1.0, 1), (0.25, 4), (0.15, 2), (0.17, 3), (0.999, 16), (40, 16)])
def test_replay_quota_as_count_and_fraction(smoke_bench, quota, per_task):
    """--quota below 1 is a fraction of a task's 16 training pairs (rounded), from 1 a count (at most all of
    them): after each task that many distinct pairs of it are kept, exactly as the task stores them."""
    from assocgan.methods import Context

    cfg, bench = smoke_bench
    gen = torch.Generator().manual_seed(0)
    m = Replay(Context(cfg, None, None, gen, len(bench.tasks), bench.task_names, lambda: None), quota=quota)
    pair = bench.tasks[0].pair_bytes(1)
    for t, task in enumerate(bench.tasks):
        m.before_task(t, task)
        m.after_task(t, task)
        assert [x.shape[0] for x, _ in m.stores] == [per_task] * (t + 1)
        assert m.memory() == {"pairs": (t + 1) * per_task * pair}
        (x, y), idx = m.stores[t], m.source_index[t]
        assert len(set(idx.tolist())) == per_task  # distinct pairs
        assert torch.equal(x, task.train_x[idx]) and torch.equal(y, task.train_y[idx])


# ---- generative replay -------------------------------------------------------------------------------
def closer_to_past(method) -> tuple[float, float]:
    """Distances in simple image statistics between the source model's samples of task 1 (low light, past)
    and the inputs of task 1 and of task 2 (noise, current)."""
    from assocgan.data import photos
    from assocgan.data.benchmarks import load_benchmark

    cfg, _ = smoke(method, steps=30)
    bench = load_benchmark(clean_images=photos.FOLDER, recipe="lowlight:0.35,noise:0.15", size=cfg.size, n_train=cfg.n_train, n_test=cfg.n_test)
    recs = train_method(method, bench, cfg)
    m = recs[-1].method
    g = torch.Generator().manual_seed(0)
    real = [image_statistics(t.sample(64, g)[0]) for t in bench.tasks]
    fake = image_statistics(m.sample_sources(m.sampler(), torch.zeros(64, dtype=torch.long)))
    return cfg, bench, recs, [float((fake - r).abs().sum()) for r in real]


def check_generative_replay(cfg, bench, recs, dist):
    past, current = dist
    assert past < 0.5 * current, dist
    m = recs[-1].method
    # a batch on task 2 holds generated past inputs (label 0) with pseudo-targets from the frozen previous G
    m.before_task(1, bench.tasks[1])  # (again: a frozen copy of the source model serves the replay)
    b = m.batch(1, bench.tasks[1])
    gen_rows = b.where(Batch.GENERATED)
    assert len(b) == cfg.batch_size and 0 < int(gen_rows.sum()) < cfg.batch_size
    assert (b.task[gen_rows] == 0).all() and (b.task[~gen_rows] == 1).all()
    assert torch.allclose(b.y[gen_rows], m.teacher(b.x[gen_rows]).clamp(0, 1))
    # JTR: the replayed pairs are judged by D; they stay out of the content loss, where RA alone covers them
    assert b.judged.all() and float(b.weight[gen_rows].sum()) == 0
    assert float(b.weight.sum()) == pytest.approx(float((~gen_rows).float().mean()))
    fake = b.y + 0.1
    share = float(gen_rows.float().mean())
    ra = m.generator_loss(Step(1, 0, b, fake))
    assert float(ra) == pytest.approx(m.o("align") * share * 0.01, rel=1e-4)  # RA: align x share x MSE on replayed rows
    setattr(m.settings, f"{m.prefix}_align", 0.0)
    assert m.generator_loss(Step(1, 0, b, fake)) is None
    setattr(m.settings, f"{m.prefix}_jtr", False)
    b2 = m.batch(1, bench.tasks[1])
    assert not b2.judged[b2.where(Batch.GENERATED)].any() and b2.judged[~b2.where(Batch.GENERATED)].all()
    # memory: the source model and a float16 copy of G, the same after every task
    assert all(r.memory == recs[0].memory for r in recs)
    assert recs[-1].memory["previous_generator"] == module_bytes(UNet(3, 3, cfg.ngf), torch.float16)


def test_mergan_source_generator_remembers_past_inputs():
    cfg, bench, recs, dist = closer_to_past("mergan")
    check_generative_replay(cfg, bench, recs, dist)
    mem = recs[-1].memory
    assert mem["source_generator"] == module_bytes(SourceGenerator(2, cfg.size, 16, 32))
    assert mem["source_critic"] == module_bytes(SourceCritic(2, 16))


def test_lvaegan_source_model_remembers_past_inputs_and_its_latent_groups_tasks():
    cfg, bench, recs, dist = closer_to_past("lvaegan")
    check_generative_replay(cfg, bench, recs, dist)
    m = recs[-1].method
    x = torch.cat([t.test_pairs()[0] for t in bench.tasks])
    truth = torch.arange(2).repeat_interleave(cfg.n_test)
    assert (m.infer_task(x) == truth).float().mean() >= 0.75
    mem = recs[-1].memory
    assert mem["vae_encoder"] == module_bytes(SourceEncoder(2, cfg.size, 16, 32))
    assert mem["vae_decoder"] == module_bytes(SourceGenerator(2, cfg.size, 16, 32))


# ---- piggyback ---------------------------------------------------------------------------------------
def test_piggyback_freezes_its_bank_and_keeps_task_one_bit_identical():
    cfg, bench = smoke("piggyback-ti", steps=3)
    x1 = bench.tasks[0].test_pairs()[0]
    outs, banks, mems = [], [], []

    def on_task(rec):
        G = rec.generator
        outs.append(predict(rec.method.eval_generator(0), x1))
        convs = [m for m in G.modules() if isinstance(m, PiggybackConv)]
        banks.append([m.bank(m.n_tasks).detach().clone() for m in convs])
        mems.append(rec.memory)
        # what it keeps beyond the plain generator every method has, exactly
        assert sum(rec.memory.values()) == module_bytes(G) - module_bytes(UNet(3, 3, cfg.ngf))

    recs = train_method("piggyback-ti", bench, cfg, on_task=on_task)
    m = recs[-1].method
    assert m.needs_task_id
    for t in range(1, 4):
        assert torch.equal(outs[t], outs[0])  # task 1's outputs, bit for bit, after each later task
        for before, after in zip(banks[t - 1], banks[t]):  # the bank only grows; what was in it is unchanged
            assert torch.equal(after[: before.shape[0]], before)
    # each task answers with its own filters
    assert not torch.equal(predict(m.eval_generator(3), x1), outs[0])
    totals = [sum(mm.values()) for mm in mems]
    assert totals[0] == 0 and all(b > a for a, b in zip(totals, totals[1:]))
    convs = [c for c in recs[-1].generator.modules() if isinstance(c, PiggybackConv)]
    assert mems[-1]["new_filters"] == sum(3 * c.n_new * c.bank0[0].numel() * 4 for c in convs)


def test_piggyback_without_the_task_id_answers_every_task_with_the_newest_filters():
    """The paper's PiggybackGAN (no task identity at test) forgets: after task 4 it answers task 1 with task 4's
    filters, where the task-identity variant trained the same way answers with task 1's."""
    cfg, bench = smoke("piggyback", steps=3)
    x1 = bench.tasks[0].test_pairs()[0]
    plain = train_method("piggyback", bench, cfg)[-1].method
    told = train_method("piggyback-ti", bench, cfg)[-1].method
    assert not plain.needs_task_id and told.needs_task_id
    assert torch.equal(predict(plain.eval_generator(0), x1), predict(told.eval_generator(3), x1))
    assert not torch.equal(predict(plain.eval_generator(0), x1), predict(told.eval_generator(0), x1))


# ---- the command line --------------------------------------------------------------------------------
def test_run_smoke_with_the_four_methods(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--preset", "smoke", "--methods", "replay,mergan,lvaegan,piggyback", "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    m = res["methods"]
    cfg = make_config("smoke")
    pair = 2 * 3 * cfg.size**2
    per_task = round(0.1 * cfg.n_train)
    assert m["replay"]["memory_by_task"] == [(t + 1) * per_task * pair for t in range(4)]  # one store per task
    g16 = module_bytes(UNet(3, 3, cfg.ngf), torch.float16)
    gen, critic = module_bytes(SourceGenerator(4, cfg.size)), module_bytes(SourceCritic(4))
    assert m["mergan"]["memory_by_task"] == [gen + critic + g16] * 4  # constant: a source GAN and G_prev
    enc = module_bytes(SourceEncoder(4, cfg.size))
    assert m["lvaegan"]["memory_by_task"] == [enc + gen + critic + g16] * 4
    assert m["piggyback"]["task_id_at_test"] is False
    # piggyback keeps, beyond the plain generator every method has, what its checkpoint holds beyond one
    from safetensors.torch import load_file

    tasks = res["tasks"]
    plain = module_bytes(UNet(3, 3, cfg.ngf))
    for t, task in enumerate(tasks):
        state = load_file(str(out / "checkpoints" / "piggyback" / f"task{t + 1}_{task}.safetensors"))
        assert m["piggyback"]["memory_by_task"][t] == sum(v.numel() * v.element_size() for v in state.values()) - plain
    assert m["piggyback"]["memory_by_task"][0] == 0 < m["piggyback"]["memory_by_task"][1]
    # each of the other three answers with its final generator: its checkpoint gives the last row of the matrix
    bench = benchmark_for(cfg)
    for name in ("replay", "mergan", "lvaegan"):
        G = UNet(3, 3, cfg.ngf, norm=cfg.norm, residual=cfg.residual)
        G.load_state_dict(load_file(str(out / "checkpoints" / name / f"task4_{tasks[-1]}.safetensors")))
        for j, task in enumerate(bench.tasks):
            x, y = task.test_pairs()
            want = float(scores(predict(G, x), y, cfg.convention())["psnr"].mean())  # the run's evaluation convention
            assert m[name]["matrix"][-1][j] == pytest.approx(want, abs=1e-4), (name, j)


def test_jl_trains_on_a_batch_of_every_task_seen_or_on_one_shared_batch():
    """--jl-batch each: on task t, a batch of --batch-size from each of the t tasks seen, the current one marked
    current and the others stored; shared: one batch of --batch-size shared by them."""
    import contextlib

    from assocgan.config import make_config
    from assocgan.data.benchmarks import load_benchmark
    from assocgan.methods import Context, get_method
    from assocgan.methods.base import Batch
    from assocgan.train import build_networks

    bench = load_benchmark("mixed4", size=32, n_train=6, n_test=2)
    cfg = make_config("smoke", methods=["jl"])
    sizes = {}
    for mode in ("each", "shared"):
        G, D = build_networks(cfg, torch.device("cpu"))
        ctx = Context(cfg, G, D, torch.Generator().manual_seed(0), len(bench.tasks), bench.task_names, contextlib.nullcontext)
        jl = get_method("jl")(ctx, jl_batch=mode)
        for t, task in enumerate(bench.tasks[:3]):
            jl.before_task(t, task)
        batch = jl.batch(2, bench.tasks[2])
        sizes[mode] = len(batch)
        if mode == "each":
            assert torch.equal(torch.bincount(batch.task, minlength=3), torch.full((3,), cfg.batch_size))
            assert torch.equal(batch.source == Batch.CURRENT, batch.task == 2)
    assert sizes == {"each": 3 * cfg.batch_size, "shared": cfg.batch_size}
