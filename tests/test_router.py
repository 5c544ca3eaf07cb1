"""The task router (``--router on``): a method told the task identity answered without it, through a classifier
trained on the current task's inputs and its mappers' samples of the past tasks (no stored old data); tiny runs
(preset smoke)."""

from __future__ import annotations

import json

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config
from assocgan.data.tasks import Task
from assocgan.errors import UserError
from assocgan.router import TaskRouter
from assocgan.runner import benchmark_for
from assocgan.train import Trainer, train_method
from degraded import degraded_benchmark


def _cfg(**kw):
    return make_config("smoke", threads=1, **kw)


@pytest.fixture(scope="module")
def noise_blur():
    """lora on noise then blur (smoke size) with the router, and the same run without it."""
    torch.set_num_threads(1)
    bench = degraded_benchmark(["noise", "blur"], size=32, n_train=32, n_test=8)
    on = train_method("lora", bench, _cfg(steps=6, router=True))
    off = train_method("lora", bench, _cfg(steps=6))
    return bench, on, off


def test_the_router_tells_noise_from_blur_well_above_chance(noise_blur):
    _, on, _ = noise_blur
    acc = on[-1].router_accuracy
    assert len(acc) == 2 and min(acc) >= 0.75 and sum(acc) / 2 >= 0.85, acc  # chance: 0.5
    assert on[0].router_accuracy == [1.0]  # one task: every image is task 1's


def test_the_generator_trains_bit_for_bit_as_without_the_router(noise_blur):
    _, on, off = noise_blur
    assert [r.scores for r in on] == [r.scores for r in off]
    g_on, g_off = on[-1].generator.state_dict(), off[-1].generator.state_dict()
    assert g_on.keys() == g_off.keys() and all(torch.equal(g_on[k], g_off[k]) for k in g_on)
    assert all(r.routed is None and r.router_accuracy is None for r in off)
    # the router's memory counts beside the method's own
    assert set(on[-1].memory) == set(off[-1].memory) | {"router_mappers", "router"}
    assert all(on[-1].memory[k] == v for k, v in off[-1].memory.items())


def test_the_router_is_trained_on_mapper_samples_only_for_past_tasks(monkeypatch):
    """After task 2 the router's batches hold task 2's images and samples of M_1 made from task 2's images: no
    image of task 1 is read while it trains, and the router keeps no image at all."""
    torch.set_num_threads(1)
    bench = degraded_benchmark(["noise", "blur"], size=32, n_train=16, n_test=4)
    first = bench.tasks[0]
    read: list[str] = []
    real_sample = Task.sample

    def sample(self, *args, **kwargs):
        read.append(self.name)
        return real_sample(self, *args, **kwargs)

    trainer = Trainer("lora", bench, _cfg(steps=2, router=True))
    trainer.train_task(0)
    router: TaskRouter = trainer.router
    batches = []
    real_batch = TaskRouter.training_batch

    def training_batch(self, t, task, gen, plan):
        x, label = real_batch(self, t, task, gen, plan)
        batches.append((x.clone(), label.clone()))
        return x, label

    monkeypatch.setattr(Task, "sample", sample)
    monkeypatch.setattr(TaskRouter, "training_batch", training_batch)
    trainer.train_task(1)
    assert batches and set(read) == {bench.tasks[1].name}, set(read)  # task 1's data is never read after task 1
    x, label = batches[0]
    assert set(label.tolist()) == {0, 1}
    # the past task's images are M_1's samples, none of them one of task 1's stored inputs
    stored = first.stored_pairs(torch.arange(first.n_train))[0]
    past = x[label == 0]
    assert all(float((stored - img).abs().amax((1, 2, 3)).min()) > 1e-3 for img in past)
    # what the router keeps is one float16 mapper per task and its own weights: no image-shaped tensor
    for sd in [m.state_dict() for m in router.mappers] + [router.net.state_dict()]:
        assert not any(v.dim() == 4 and v.shape[1:] == first.train_x.shape[1:] for v in sd.values())
    assert all(v.dtype == torch.float16 for m in router.mappers for v in m.state_dict().values())


def test_a_perfect_router_gives_the_identity_matrix(monkeypatch):
    """With a router that always names the true task, the routed matrix is the identity-told one."""
    torch.set_num_threads(1)
    bench = degraded_benchmark(["noise", "blur"], size=32, n_train=16, n_test=4)
    tests = [t.test_pairs()[0] for t in bench.tasks]

    def route(self, x, seen):
        j = next(j for j, tx in enumerate(tests) if tx.shape == x.shape and torch.equal(tx, x))
        return torch.full((x.shape[0],), j, dtype=torch.long)

    monkeypatch.setattr(TaskRouter, "route", route)
    recs = train_method("piggyback-ti", bench, _cfg(steps=2, router=True))
    assert [r.routed for r in recs] == [r.scores for r in recs]
    assert [r.router_accuracy for r in recs] == [[1.0], [1.0, 1.0]]

    # and a router that always names task 1 answers task 2 with task 1's generator
    monkeypatch.setattr(TaskRouter, "route", lambda self, x, seen: torch.zeros(x.shape[0], dtype=torch.long))
    recs2 = train_method("piggyback-ti", bench, _cfg(steps=2, router=True))
    assert recs2[-1].router_accuracy == [1.0, 0.0] and recs2[-1].routed[1] != recs2[-1].scores[1]


@pytest.mark.parametrize("method", ["tl", "assoc", "piggyback"])
def test_the_router_is_refused_for_a_method_not_told_the_task(method, tmp_path, capsys):
    cfg = _cfg(router=True, methods=[method])
    with pytest.raises(UserError, match="--router on: method"):
        Trainer(method, benchmark_for(cfg), cfg)
    code = main(["run", "--preset", "smoke", "--methods", f"lora,{method}", "--router", "on", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--router on" in err[0] and method in err[0]


def test_results_and_report_show_the_routed_row(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(["run", "--preset", "smoke", "--steps", "2", "--order", "1,2", "--methods", "lora", "--router", "on", "--out", str(out), "--tensorboard", "off"])
        == 0
    )
    entry = json.loads((out / "results.json").read_text())["methods"]["lora"]
    assert len(entry["routed"]["psnr"]) == 2 and len(entry["router_accuracy"]) == 2 and len(entry["router_accuracy"][1]) == 2
    assert entry["routed"]["psnr"][0] == entry["psnr"][0]  # one task: the router has one answer
    capsys.readouterr()
    assert main(["report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| LoRA adapters (Hu et al.) (router) |" in text and "Task router accuracy" in text
    # without the router: no routed key, no router table
    out2 = tmp_path / "r2"
    assert main(["run", "--preset", "smoke", "--steps", "2", "--order", "1,2", "--methods", "lora", "--out", str(out2), "--tensorboard", "off"]) == 0
    entry2 = json.loads((out2 / "results.json").read_text())["methods"]["lora"]
    assert "routed" not in entry2 and "router_accuracy" not in entry2
    assert entry2["psnr"] == entry["psnr"]


def test_seeds_combine_the_routed_matrices_and_the_router_accuracy():
    from assocgan.seeds import combine_entries

    def entry(routed, acc):
        return {"matrix": [[20.0], [19.0, 21.0]], "psnr": [[20.0], [19.0, 21.0]], "complete": True, "routed": {"psnr": routed}, "router_accuracy": acc}

    one = entry([[20.0], [18.0, 21.0]], [[1.0], [1.0, 0.5]])
    two = entry([[20.0], [16.0, 21.0]], [[1.0], [0.5, 1.0]])
    out = combine_entries([one, two], ["psnr"])
    assert out["routed"]["psnr"] == [[20.0], [17.0, 21.0]]
    assert out["router_accuracy"] == [[1.0], [0.75, 0.75]]
    assert out["sd"]["routed"]["psnr"][1][0] == pytest.approx(2**0.5)
    assert "routed" not in combine_entries([{k: v for k, v in one.items() if k not in ("routed", "router_accuracy")}], ["psnr"])


def test_the_routed_row_says_where_it_ends_below_doing_nothing_and_the_gap_it_closes():
    from assocgan.report.tables import summary_table

    def entry(title, final, matrix, **kw):
        return {"title": title, "complete": True, "matrix": matrix, "psnr": matrix, "final_avg": final, "bwt": 0.0, "train_seconds": 1.0, **kw}

    told = [[26.0], [25.0, 27.0]]
    routed = [[26.0], [19.0, 27.0]]  # the router sends task 1's images elsewhere: below doing nothing (20 dB) there
    results = {
        "benchmark": "b",
        "metric": "psnr",
        "tasks": ["a", "b"],
        "identity": {"psnr": [20.0, 20.0]},
        "methods": {
            "tl": entry("TL", 22.0, [[26.0], [18.0, 26.0]]),
            "jl": entry("JL", 26.0, [[26.0], [25.0, 27.0]]),
            "lora": entry("LoRA (task id)", 26.0, told, task_id_at_test=True, routed={"psnr": routed}),
        },
    }
    table = summary_table(results)
    row = next(r for r in table.rows if r[0] == "LoRA (router)")
    assert row[1] == "23.00" and row[-2] == "25%" and row[-1] == "T1"
    told_row = next(r for r in table.rows if r[0].startswith("LoRA (task id)"))
    assert told_row[-1] == "none" and told_row[-2] == "100%"
    assert "(router): the row above" in table.note
    del results["methods"]["lora"]["routed"]
    assert "(router)" not in summary_table(results).note


def test_on_a_chain_the_router_imitates_each_past_task_s_inputs_from_its_own_target_domain():
    """dark -> grey -> red -> green: while the third task trains, task 2's targets (red) are the current inputs and
    task 1's (grey) what M_2 makes of them; M_j applied there gives images like task j's inputs, not M_j of the
    current targets (green), which look like no task's."""
    from assocgan.nets.mapper import DomainSignature, colour_kept
    from test_assoc import _chain_bench, _Tint

    bench = _chain_bench()
    router = TaskRouter(_cfg(), 3, torch.device("cpu"))
    router._work = [_Tint([0.6, 0.6, 0.6], [-0.15, -0.15, -0.15]), _Tint([1.0, 1.0 / 0.3, 1.0 / 0.3], [0.0, 0.0, 0.0])]  # exact inverses
    router.signatures = [DomainSignature(task.train_y.float().div(255)) for task in bench.tasks[:2]]
    router.colour_kept = [colour_kept(task.train_x, task.train_y) for task in bench.tasks[:2]]  # neither loses colour
    task = bench.tasks[2]
    plan = router.plan(2, task)
    assert plan == {1: "input", 0: 1}
    router._work.append(_Tint([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]))  # task 3's own mapper: not looked at for the past tasks
    x, labels = router.training_batch(2, task, torch.Generator().manual_seed(0), plan)
    for j in (0, 1):
        made = x[labels == j]
        want = bench.tasks[j].train_x.float().div(255)
        assert made.mean((0, 2, 3)) == pytest.approx(want.mean((0, 2, 3)), abs=0.03), j  # each channel's mean: task j's inputs


def test_the_router_gives_new_colours_to_a_colour_losing_task_reached_through_a_chain():
    """Cyan -> grey -> red -> green: task 1 lost its colour (grey targets) and is reached through M_2, so its
    imitated inputs get drawn hues (``nets.mapper.recoloured``), as Assoc-GAN's association inputs do: R learns
    task 1 by what is left, not by the one tint its mapper guesses. Task 2, reached directly, keeps its mapper's."""
    from assocgan.nets.mapper import DomainSignature, colour_kept
    from test_assoc import _chain_bench, _Tint

    cyan = [0.7, 1.0, 1.0]
    bench = _chain_bench(first=cyan)
    router = TaskRouter(_cfg(), 3, torch.device("cpu"))
    router._work = [_Tint(cyan, [0.0, 0.0, 0.0]), _Tint([1.0, 1.0 / 0.3, 1.0 / 0.3], [0.0, 0.0, 0.0]), _Tint([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])]
    router.signatures = [DomainSignature(task.train_y.float().div(255)) for task in bench.tasks[:2]]
    router.colour_kept = [colour_kept(task.train_x, task.train_y) for task in bench.tasks[:2]]
    assert router.colour_kept[0] < 0.05
    plan = router.plan(2, bench.tasks[2])
    assert plan == {1: "input", 0: 1}
    x, labels = router.training_batch(2, bench.tasks[2], torch.Generator().manual_seed(0), plan)
    hue = lambda imgs: (imgs - imgs.mean(1, keepdim=True)).mean((2, 3))  # each image's colour direction
    assert float(hue(x[labels == 0]).std(0).sum()) > 0.05  # drawn afresh, not the mapper's one cyan
    assert float(hue(x[labels == 1]).std(0).sum()) < 0.02  # task 2 keeps its mapper's colour


def test_after_each_task_the_router_keeps_how_much_colour_the_task_kept():
    from assocgan.memory import module_bytes
    from assocgan.nets.mapper import colour_kept
    from test_assoc import _chain_bench

    task = _chain_bench(first=[0.7, 1.0, 1.0]).tasks[0]  # cyan -> grey: its targets keep none of the colour
    router = TaskRouter(_cfg(steps=2), 3, torch.device("cpu"))
    router.after_task(0, task)
    assert router.colour_kept == [pytest.approx(colour_kept(task.train_x[:256], task.train_y[:256]))] and router.colour_kept[0] < 0.05
    assert router.memory()["router_mappers"] == module_bytes(router.mappers[0]) + router.signatures[0].nbytes + 4
    restored = TaskRouter(_cfg(steps=2), 3, torch.device("cpu"))
    restored.load_state_dict(router.state_dict())
    assert restored.colour_kept == router.colour_kept
