"""LwF (Li & Hoiem): the distillation towards the previous generator on the current task's own sources.

Trained by the real loop on two tiny tasks: the first task trains exactly as TL (no teacher, no term); while the
second trains, the term is lambda * MSE(G(x), G_old(x)) on each step's sources, G_old being the generator kept
after the first task (in float16), which stays as it was; its gradient is that of the MSE towards fixed outputs;
at lambda 0 LwF trains exactly as TL; the bytes kept; a smoke run through the CLI.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from assocgan.config import make_config
from assocgan.methods import Batch, Step
from assocgan.methods.lwf import LwF
from test_methods_regularization import drift, train

STEPS = 12
LAMBDA = 0.7


def _half_copy(module):
    """A float32 copy of ``module`` with its weights rounded to float16 (a copy kept in float16)."""
    return copy.deepcopy(module).half().float().eval()


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values())) and a.state_dict().keys() == b.state_dict().keys()


@pytest.fixture(scope="module")
def tl_run(bench2):
    kept = []
    records, m = train("tl", bench2, on_task=lambda r: kept.append(copy.deepcopy(r.generator)))
    return records, m, kept


@pytest.fixture(scope="module")
def lwf_run(bench2):
    """LwF at weight LAMBDA; for every step of the second task: the sources, the term, the same computed by hand
    from the generator and a float16 copy of task 1's generator, and the teacher's weights at that step."""
    kept, seen = [], []
    original = LwF.generator_loss

    def spy(self, step):
        out = original(self, step)
        if step.t == 0:
            assert out is None and self.teacher is None  # the first task: no teacher, no term
        else:
            with torch.no_grad():
                hand = LAMBDA * F.mse_loss(self.ctx.G(step.x), _half_copy(kept[0])(step.x))
            stored = {k: v.clone() for k, v in self.teacher.stored.state_dict().items()}
            working = {k: v.clone() for k, v in self.teacher.model.state_dict().items()}
            seen.append((step.x.clone(), float(out.detach()), float(hand), stored, working, out.requires_grad))
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(LwF, "generator_loss", spy)
    try:
        records, m = train("lwf", bench2, on_task=lambda r: kept.append(copy.deepcopy(r.generator)), lwf_lambda=LAMBDA)
    finally:
        mp.undo()
    return records, m, kept, seen


def test_first_task_trains_exactly_as_tl(lwf_run, tl_run):
    records, _, kept, _ = lwf_run
    tl_records, _, tl_kept = tl_run
    assert "g_extra" not in records[0].losses and "g_extra" not in tl_records[0].losses
    assert _same_weights(kept[0], tl_kept[0])  # the generator after task 1, bit for bit
    assert records[0].scores == tl_records[0].scores
    # the second task does not: the term acts
    assert records[1].losses["g_extra"] > 0
    assert not _same_weights(kept[1], tl_kept[1])


def test_term_is_lambda_mse_to_the_previous_generator_on_the_current_sources(lwf_run, bench2):
    _, m, kept, seen = lwf_run
    assert len(seen) == STEPS  # every step of the second task
    task1 = {k: v.half() for k, v in kept[0].state_dict().items()}
    for x, got, hand, stored, working, grad in seen:
        assert hand > 0 and got == pytest.approx(hand, rel=1e-5)
        assert grad  # it reaches the generator
        # the teacher is task 1's generator as stored in float16, unchanged by the second task's updates
        assert stored.keys() == task1.keys() and all(torch.equal(stored[k], task1[k]) for k in task1)
        assert all(torch.equal(working[k], task1[k].float()) for k in task1)
    # the sources are the second task's
    assert all(x.shape[0] == make_config("smoke").batch_size for x, *_ in seen)
    # after the last task the teacher is that task's generator, frozen
    assert all(torch.equal(a, b.detach().half()) for a, b in zip(m.teacher.stored.parameters(), kept[-1].parameters()))
    assert not any(p.requires_grad for p in m.teacher.stored.parameters())
    assert not any(p.requires_grad or p.grad is not None for p in m.teacher.model.parameters())


def test_gradient_is_that_of_the_mse_towards_fixed_outputs_and_reaches_g_only(lwf_run, bench2):
    _, m, kept, _ = lwf_run
    G = m.ctx.G
    x, y = bench2.tasks[1].sample(4, torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in m.teacher.stored.state_dict().items()}
    drift(G.parameters())  # away from the teacher, as a longer task would move it
    fake = G(x)
    term = m.generator_loss(Step(1, 0, Batch.of(x, y, 1), fake))
    with torch.no_grad():
        target = _half_copy(kept[-1])(x)
    want = LAMBDA * F.mse_loss(fake, target)
    assert float(want.detach()) > 1e-6 and float(term.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    params = list(G.parameters())
    got_g = torch.autograd.grad(term, params, retain_graph=True)
    want_g = torch.autograd.grad(want, params)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-10)
    assert any(g.any() for g in got_g)
    # a small step on it brings G's outputs towards the teacher's; the teacher stays
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in got_g))
    with torch.no_grad():
        dist = float(F.mse_loss(G(x), target))
        for p, g in zip(params, got_g):
            p.sub_(1e-4 * g / norm)
        assert float(F.mse_loss(G(x), target)) < dist
    assert all(torch.equal(v, before[k]) for k, v in m.teacher.stored.state_dict().items())
    # the teacher's outputs are the frozen copy's, whatever G does
    with torch.no_grad():
        assert torch.equal(m.teacher(x), target)


def test_at_weight_zero_trains_exactly_as_tl(bench2, tl_run):
    _, _, tl_kept = tl_run
    kept = []
    records, m = train("lwf", bench2, on_task=lambda r: kept.append(copy.deepcopy(r.generator)), lwf_lambda=0.0)
    assert m.teacher is not None and records[1].losses["g_extra"] == 0
    for a, b in zip(kept, tl_kept):
        assert _same_weights(a, b)


def test_memory_is_the_previous_generator_in_float16(lwf_run):
    records, m, _, _ = lwf_run
    n_g = sum(p.numel() for p in m.ctx.G.parameters())
    assert records[0].memory == records[1].memory == {"teacher": 2 * n_g}
    assert m.memory_bytes() == 2 * n_g
    assert {p.dtype for p in m.teacher.stored.parameters()} == {torch.float16}


def test_state_round_trip(lwf_run, bench2):
    _, m, _, _ = lwf_run
    state = m.state_dict()
    fresh = LwF(m.ctx, lwf_lambda=LAMBDA)
    fresh.load_state_dict({"teacher": None}, [])
    assert fresh.teacher is None and fresh.memory() == {}
    fresh.load_state_dict(state, bench2.tasks)
    assert _same_weights(fresh.teacher.stored, m.teacher.stored) and _same_weights(fresh.teacher.model, m.teacher.model)


def test_cli_smoke_run(tmp_path):
    from assocgan.cli import main

    out = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--methods", "tl,lwf", "--benchmark", "restore4", "--order", "1,2", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["tl", "lwf"] and len(res["tasks"]) == 2
    entry = res["methods"]["lwf"]
    assert entry["complete"] and len(entry["matrix"]) == 2
    assert entry["title"] == "LwF (Li & Hoiem)" and entry["options"] == {"lwf_lambda": 1.0}
    assert entry["memory_bytes"] > 0
