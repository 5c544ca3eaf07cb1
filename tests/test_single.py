"""Single: one specialist per task, each trained alone from the run's initial weights."""

from __future__ import annotations

import torch

from assocgan.config import make_config
from assocgan.data.benchmarks import load_benchmark
from assocgan.memory import module_bytes
from assocgan.methods import Method
from assocgan.methods.single import Single
from assocgan.train import train_method


def test_each_specialist_starts_from_the_initial_weights_and_never_changes(monkeypatch):
    bench = load_benchmark("restore4", size=32, n_train=8, n_test=4, seed=0, order="noise,oversharpen,blur")
    cfg = make_config("smoke", steps=6)
    starts = []
    original = Single.before_task

    def spy(self, t, task):
        original(self, t, task)
        starts.append([{k: v.clone() for k, v in net.state_dict().items()} for net in (self.ctx.G, self.ctx.D)])

    monkeypatch.setattr(Single, "before_task", spy)
    recs = train_method("single", bench, cfg)
    m = recs[-1].method
    for t in range(1, 3):  # G and D start every task where they started the first
        for net in range(2):
            assert all(torch.equal(starts[t][net][k], starts[0][net][k]) for k in starts[0][net])
    # G had moved away from them while training the previous task
    assert any(not torch.equal(recs[0].method.specialists[0].state_dict()[k], starts[0][0][k]) for k in starts[0][0])
    # each task is answered by its own specialist, whose score never changes (BWT 0)
    psnr = [[s["psnr"] for s in r.scores] for r in recs]
    for j in range(3):
        assert all(abs(psnr[i][j] - psnr[j][j]) < 1e-6 for i in range(j, 3))
    assert m.eval_generator(0) is not m.eval_generator(1)
    assert m.memory() == {"generators": 3 * module_bytes(recs[-1].generator)}
    assert Single.needs_task_id and Single is not Method
