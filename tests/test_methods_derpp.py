"""DER++ on the generator: the store keeps each stored source's target and the generator's output at the time it was
stored; the alpha term matches those outputs and the beta term the stored targets. Tiny runs (preset smoke)."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config
from assocgan.methods import Context, Step
from assocgan.methods.derpp import DERpp, item_bytes
from assocgan.runner import benchmark_for
from assocgan.train import build_networks, train_method


def smoke(method: str, **kw):
    opts = kw.pop("opts", {})
    cfg = make_config("smoke", threads=1, methods=[method], method_options={method: opts}, **kw)
    return cfg, benchmark_for(cfg)


def stored_floats(m: DERpp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = m.filled
    return m.x[:n].float() / 255, m.y[:n].float() / 255, m.z[:n].float()


def test_the_stored_outputs_are_the_generators_outputs_when_stored(monkeypatch):
    """Each stored output is what the generator gave on that source at the step that stored it (before the step's
    update), to float16 precision; with a buffer smaller than the stream, the reservoir keeps items of every task."""
    snapshots = []  # the generator before each step (batches are made right before their step)
    original = DERpp.batch

    def spy(self, t, task):
        snapshots.append(copy.deepcopy(self.ctx.G.state_dict()))
        return original(self, t, task)

    monkeypatch.setattr(DERpp, "batch", spy)
    cfg, bench = smoke("derpp", steps=4, opts={"derpp_buffer": 6})
    recs = train_method("derpp", bench, cfg)
    m, G = recs[-1].method, recs[-1].generator
    assert len(snapshots) == 4 * cfg.steps and m.filled == 6 and m.seen == 4 * cfg.steps * cfg.batch_size
    x, y, z = stored_floats(m)
    then = copy.deepcopy(G)
    then.train()  # as the loop trains it
    for i in range(m.filled):
        then.load_state_dict(snapshots[int(m.step_of[i])])
        with torch.no_grad():
            want = then(x[i : i + 1])[0]
        assert ((z[i] - want).abs() <= 2**-11 * want.abs() + 1e-5).all(), (i, float((z[i] - want).abs().max()))  # float16: half a unit in the last place
        task = bench.tasks[int(m.task_of[i])]  # a training pair of the task it came from (flipped or not)
        pairs = [(a.float() / 255, b.float() / 255) for a, b in zip(task.train_x, task.train_y)]
        assert any(torch.equal(x[i], a) and torch.equal(y[i], b) for a, b in pairs) or any(
            torch.equal(x[i], a.flip(-1)) and torch.equal(y[i], b.flip(-1)) for a, b in pairs
        )
    with torch.no_grad():
        now = G(x)
    assert (now - z).abs().amax() > 1e-2  # the final generator answers otherwise: the store is of the past
    assert (z - y).abs().amax() > 1e-2  # the outputs are not the targets
    assert len(set(m.task_of[: m.filled].tolist())) >= 2  # the reservoir spans tasks


@pytest.fixture(scope="module")
def loaded():
    """A DER++ method on a fresh generator with a buffer of 10 random items (sources, targets, outputs)."""
    cfg, bench = smoke("derpp")
    G, D = build_networks(cfg, torch.device("cpu"))
    ctx = Context(cfg, G, D, torch.Generator().manual_seed(0), len(bench.tasks), bench.task_names, contextlib.nullcontext)
    m = DERpp(ctx, derpp_buffer=10)
    g = torch.Generator().manual_seed(1)
    shape = (10, 3, cfg.size, cfg.size)
    x = (torch.rand(shape, generator=g) * 255).round() / 255
    y = (torch.rand(shape, generator=g) * 255).round() / 255
    m.store(0, 0, x, y, torch.rand(shape, generator=g) * 1.2 - 0.1)
    return cfg, bench, m


def flipped_like(got: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Whether each of ``got`` is its stored image flipped (else it must be the image itself)."""
    flips = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(got, stored)])
    same = torch.tensor([torch.equal(a, b) for a, b in zip(got, stored)])
    assert (flips | same).all()
    return flips


@pytest.mark.parametrize("term", ["alpha", "beta"])
def test_each_term_value_and_gradient_equal_a_hand_computation(loaded, term):
    """alpha x MSE(G(x'), z') against the stored outputs z', beta x MSE(G(x''), y'') against the stored targets, on
    a batch drawn from the store (distinct rows, the same flip on a source and its stored output or target)."""
    cfg, bench, m = loaded
    weight = 0.7
    m.settings.derpp_alpha, m.settings.derpp_beta = (weight, 0.0) if term == "alpha" else (0.0, weight)
    m.batch(0, bench.tasks[0])
    assert list(m.replayed) == [term]
    rows, xs, targets = m.replayed[term]
    assert len(rows) == cfg.batch_size and len(set(rows.tolist())) == len(rows)
    x, y, z = stored_floats(m)
    stored = z if term == "alpha" else y
    flips = flipped_like(xs, x[rows])
    assert torch.equal(flips, flipped_like(targets, stored[rows]))  # the same flip on both
    G = m.ctx.G
    G.zero_grad()
    loss = m.generator_loss(Step(0, 0, None, None))
    loss.backward()
    got = [p.grad.clone() for p in G.parameters()]
    # by hand: the mean over the batch's pixels of the squared difference, times the weight
    x_hand = torch.stack([x[r].flip(-1) if f else x[r] for r, f in zip(rows.tolist(), flips.tolist())])
    t_hand = torch.stack([stored[r].flip(-1) if f else stored[r] for r, f in zip(rows.tolist(), flips.tolist())])
    G.zero_grad()
    diff = G(x_hand) - t_hand
    hand = weight * (diff**2).sum() / diff.numel()
    hand.backward()
    assert float(loss.detach()) == pytest.approx(float(hand.detach()), rel=1e-6)
    for a, b in zip(got, (p.grad for p in G.parameters())):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    m.settings.derpp_alpha = m.settings.derpp_beta = 0.0
    m.batch(0, bench.tasks[0])
    assert m.generator_loss(Step(0, 0, None, None)) is None


def test_at_zero_weights_it_trains_exactly_as_tl():
    """At alpha = beta = 0 nothing is drawn from the store (the reservoir has a stream of its own): the run's draws
    and the generator are TL's, bit for bit, while the store still fills. With a weight it trains otherwise."""
    cfg, bench = smoke("tl", steps=3)
    tl = train_method("tl", bench, cfg)
    cfg0, _ = smoke("derpp", steps=3, opts={"derpp_alpha": 0.0, "derpp_beta": 0.0})
    zero = train_method("derpp", bench, cfg0)
    for a, b in zip(tl, zero):
        assert a.scores == b.scores
    for (k, v), w in zip(tl[-1].generator.state_dict().items(), zero[-1].generator.state_dict().values()):
        assert torch.equal(v, w), k
    assert zero[-1].method.filled == 4 * 3 * cfg.batch_size
    cfg1, _ = smoke("derpp", steps=3, opts={"derpp_alpha": 0.5, "derpp_beta": 0.0})
    on = train_method("derpp", bench, cfg1)
    assert any(not torch.equal(a, b) for a, b in zip(on[-1].generator.state_dict().values(), tl[-1].generator.state_dict().values()))


def test_memory_counts_the_stored_items_until_the_buffer_is_full():
    """Sources and targets uint8, outputs float16: each stored item is 3 x H x W x 4 bytes; the memory grows with
    the stored items until the buffer is full. --derpp-bytes gives the buffer as the items that fit a budget."""
    cfg, bench = smoke("derpp", steps=3, opts={"derpp_buffer": 20})
    recs = train_method("derpp", bench, cfg)
    one = item_bytes((3, cfg.size, cfg.size))
    assert one == 3 * cfg.size**2 * 4
    per_task = cfg.steps * cfg.batch_size  # 12 samples of the stream a task
    assert [sum(r.memory.values()) for r in recs] == [min((t + 1) * per_task, 20) * one for t in range(4)]
    m = recs[-1].method
    assert m.memory() == {"pairs": 2 * 20 * 3 * cfg.size**2, "outputs": 20 * 3 * cfg.size**2 * 2}
    assert m.memory()["pairs"] == m.x.numel() + m.y.numel() and m.memory()["outputs"] == m.z.numel() * m.z.element_size()
    assert m.x.dtype == m.y.dtype == torch.uint8 and m.z.dtype == torch.float16
    cfg, bench = smoke("derpp", steps=3, opts={"derpp_bytes": 7.5 * one})
    assert [sum(r.memory.values()) for r in train_method("derpp", bench, cfg)] == [7 * one] * 4


def test_resume_state_goes_on_as_the_original(loaded):
    """The state holds the store, the counts and the reservoir's stream: a method loaded from it stores and draws
    as the original."""
    cfg, bench, m = loaded
    m.settings.derpp_alpha = m.settings.derpp_beta = 0.5
    other = DERpp(m.ctx, derpp_buffer=10)
    other.load_state_dict(copy.deepcopy(m.state_dict()), [])
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, cfg.size, cfg.size, generator=g)
    for k in (m, other):
        k.store(1, 5, x, x, x)
    for name in ("x", "y", "z", "task_of", "step_of"):
        assert torch.equal(getattr(m, name), getattr(other, name))
    assert (m.seen, m.filled) == (other.seen, other.filled) == (16, 10)


def test_run_smoke(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--methods", "tl,derpp", "--benchmark", "restore4", "--order", "1,2", "--threads", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    entry = res["methods"]["derpp"]
    assert entry["complete"] and len(entry["matrix"]) == 2
    cfg = make_config("smoke")
    assert entry["memory_by_task"] == [(t + 1) * cfg.steps * cfg.batch_size * item_bytes((3, cfg.size, cfg.size)) for t in range(2)]
