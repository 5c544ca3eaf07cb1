"""Assoc-GAN: the mapping memory reproduces a task's randomness, the controller mixes association samples,
the continual distillation anchors the weights, and the memory is counted as stored."""

from __future__ import annotations

import pytest
import torch

from assocgan.cli import main
from assocgan.config import make_config
from assocgan.data.benchmarks import Benchmark, load_benchmark
from assocgan.fisher import QuadraticAnchor, per_sample_content_loss, per_sample_fisher
from assocgan.losses import content_loss
from assocgan.memory import module_bytes
from assocgan.methods import Batch
from assocgan.methods.assoc import DomainSignature
from assocgan.metrics import noise_sigma, psnr
from assocgan.nets import UNet
from assocgan.nets.mapper import Mapper
from assocgan.train import train_method
from degraded import degraded_benchmark


def _bench(names, size=32, n_train=32):
    return degraded_benchmark(names, size=size, n_train=n_train, n_test=8, seed=3)


def _train(bench, steps=6, **opts):
    cfg = make_config("smoke", steps=steps, method_options={"assoc": opts})
    return train_method("assoc", bench, cfg)[-1].method


@pytest.fixture(scope="module")
def noise_blur_method():
    torch.set_num_threads(1)
    return _train(_bench(["noise", "blur", "colorcast"]), steps=4, mapper_steps=250, mapper_batch=16, distill=True)


def test_noise_mapper_reproduces_the_noise_level(noise_blur_method):
    m = noise_blur_method
    noise_task = _bench(["noise"]).tasks[0]
    x, y = noise_task.test_pairs()
    true_std = float((x - y).std())
    fake = m.association_samples(y, 0)
    got_std = float((fake - y).std())
    assert abs(got_std - true_std) / true_std < 0.25, (got_std, true_std)
    # and it is random: two draws differ, unlike a mean (clean) prediction
    assert float((m.association_samples(y, 0) - fake).abs().mean()) > 0.05


def test_deterministic_task_gets_almost_no_noise_and_a_faithful_mean(noise_blur_method):
    m = noise_blur_method
    assert float(m.mappers[0].noise_scale) > 0.5
    noise_level = float(noise_sigma(m.association_samples(_bench(["noise"]).tasks[0].test_pairs()[1], 0)).mean())
    for j, name in ((1, "blur"), (2, "colorcast")):
        x, y = _bench([name]).tasks[0].test_pairs()
        fake = m.association_samples(y, j)
        # the mapper's source is closer to the real source than the clean target is
        assert float(psnr(fake, x).mean()) > float(psnr(y, x).mean()) + 1.0, name
        # (nearly) deterministic: the calibration adds (almost) no noise, two draws (almost) the same
        assert float(m.mappers[j].noise_scale) < 0.1 * float(m.mappers[0].noise_scale), name
        assert float((fake - m.association_samples(y, j)).abs().mean()) < 0.1 * noise_level, name


def test_noise_is_calibrated_from_stored_pairs_of_a_user_folder(tmp_path, monkeypatch):
    """A --data folder of noisy pairs (no degradation known to the tool): the mapper's samples get the noise
    level of the stored sources, and no degradation is ever called."""
    from PIL import Image

    from assocgan.data.degradations import Degradation

    def refuse(self, *a, **k):
        raise AssertionError("a degradation was called")

    clean = _bench(["blur"], n_train=24).tasks[0]
    monkeypatch.setattr(Degradation, "__call__", refuse)
    rng = torch.Generator().manual_seed(0)
    for split, ys in (("train", clean.train_y), ("test", clean.test_y)):
        for i, y in enumerate(ys):
            x = (y.float() + 0.1 * 255 * torch.randn(y.shape, generator=rng)).clamp(0, 255).round().to(torch.uint8)
            for side, img in (("A", x), ("B", y)):
                d = tmp_path / "denoise" / split / side
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")
    bench = load_benchmark(data=tmp_path, size=32)
    m = _train(bench, steps=2, mapper_steps=250, mapper_batch=16)
    x, y = bench.tasks[0].test_pairs()
    fake = m.association_samples(y, 0)
    want, got = float((x - y).std()), float((fake - y).std())
    assert abs(got - want) / want < 0.3, (got, want)


def test_impulse_mapper_draws_impulses_at_the_tasks_rate_and_a_deterministic_one_none():
    """Salt-and-pepper noise is not Gaussian: the mapper draws black and white pixels at the share the stored
    sources hold (calibrated from them), and the blur task's mapper draws none."""
    from assocgan.nets.mapper import impulses

    recipes = {"impulse": "impulse:0.1", "blur": "blur:2"}
    bench = degraded_benchmark(["impulse", "blur"], n_train=32, recipes=recipes)
    m = _train(bench, steps=2, mapper_steps=250, mapper_batch=16)
    for j, want in ((0, 0.1), (1, 0.0)):
        x, y = bench.tasks[j].test_pairs()
        fake = torch.cat([m.association_samples(y, j) for _ in range(4)])
        hit, white = impulses(fake, y.repeat(4, 1, 1, 1))
        share = float(hit.float().mean())
        assert abs(share - want) <= 0.25 * want + 1e-3, (bench.tasks[j].name, share)
        if want:
            assert 0.3 < float(white[hit].float().mean()) < 0.7  # salt and pepper alike
            # between the impulses the sample is the clean target, not Gaussian speckle
            keep = ~hit.expand_as(fake)
            assert float((fake - y.repeat(4, 1, 1, 1))[keep].abs().mean()) < 0.03


def test_controller_mixes_balanced_association_samples(noise_blur_method):
    m = noise_blur_method
    task = _bench(["colorcast"]).tasks[0]
    n = m.ctx.cfg.batch_size
    assert m.ratio(3) == pytest.approx(3 / 4)  # three past tasks: each task gets a quarter of the batch
    m.before_task(3, task)
    b = m.batch(3, task)
    n_assoc = round(3 / 4 * n)
    assert b.x.shape == b.y.shape == (n, 3, 32, 32) and not b.x.requires_grad
    cur, assoc = b.where(Batch.CURRENT), b.where(Batch.ASSOCIATION)
    assert int(cur.sum()) == n - n_assoc and int(assoc.sum()) == n_assoc
    assert set(b.task[cur].tolist()) == {3} and set(b.task[assoc].tolist()) <= {0, 1, 2}
    # eq. 3: the current pairs weigh 1 - r of the content loss, the association samples r
    assert float(b.weight[cur].sum()) == pytest.approx(1 / 4) and float(b.weight[assoc].sum()) == pytest.approx(3 / 4)
    # the current pairs are colour-cast sources (red raised against blue); association sources differ from targets
    x, y = b.x[cur], b.y[cur]
    assert torch.all(x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2)) > y[:, 0].mean((1, 2)) - y[:, 2].mean((1, 2)))
    assert not torch.equal(b.x[assoc], b.y[assoc])


@pytest.mark.parametrize("r", ["0.05", "0.5"])
def test_any_ratio_weighs_its_share_of_the_loss(noise_blur_method, r, monkeypatch):
    """eq. 3 with any r and any batch: r = 0.05 of a batch of 4 is still one association sample, weighted 0.05."""
    m = noise_blur_method
    monkeypatch.setattr(m.settings, "assoc_ratio", float(r))
    task = _bench(["colorcast"]).tasks[0]
    m.before_task(3, task)
    b = m.batch(3, task)
    assoc = b.where(Batch.ASSOCIATION)
    assert 1 <= int(assoc.sum()) < len(b)
    assert float(b.weight[assoc].sum()) == pytest.approx(float(r)) and float(b.weight.sum()) == pytest.approx(1.0)
    # the loop's content loss is that weighted sum of the samples' errors
    fake = torch.rand_like(b.y)
    per = (fake - b.y).pow(2).flatten(1).mean(1)
    want = (1 - float(r)) * per[~assoc].mean() + float(r) * per[assoc].mean()
    assert float(content_loss(fake, b.y, b.weight)) == pytest.approx(float(want), rel=1e-5)


def test_association_samples_are_made_ahead_one_mapper_call_per_past_task(noise_blur_method, monkeypatch):
    m = noise_blur_method
    monkeypatch.setattr(m.settings, "assoc_target", "current")  # the paper's eq. 3: every association target is a current target
    task = _bench(["colorcast"]).tasks[0]
    calls = []
    for j, work in enumerate(m._work):
        monkeypatch.setattr(work, "sample", lambda y, gen, j=j, f=work.sample: calls.append((j, y.shape[0])) or f(y, gen))
    m.before_task(3, task)
    n = m.ctx.cfg.batch_size
    n_assoc = round(3 / 4 * n)
    targets = {tuple(img.flatten()[:64].tolist()) for u8 in (task.train_y, task.train_y.flip(-1)) for img in u8.float().div(255)}
    for _ in range(m.POOL_STEPS):
        b = m.batch(3, task)
        assert b.x.shape == (n, 3, 32, 32)
        # association targets are targets of the current task (possibly flipped)
        assert all(tuple(img.flatten()[:64].tolist()) in targets for img in b.y[b.where(Batch.ASSOCIATION)])
    assert sorted(j for j, _ in calls) == [0, 1, 2]  # one call per past task for POOL_STEPS steps
    assert sum(k for _, k in calls) == n_assoc * m.POOL_STEPS
    m.batch(3, task)
    assert len(calls) == 6  # the pool is refilled when it runs out


def _batches_while_training(monkeypatch, bench, steps=2, **opts):
    """Train Assoc-GAN on ``bench``; every batch the loop got, with its task index."""
    from assocgan.methods.assoc import AssocGAN

    seen, original = [], AssocGAN.batch

    def spy(self, t, task):
        b = original(self, t, task)
        seen.append((t, b))
        return b

    monkeypatch.setattr(AssocGAN, "batch", spy)
    m = _train(bench, steps=steps, **opts)
    monkeypatch.setattr(AssocGAN, "batch", original)
    return m, seen


def test_fixed_ratio_and_no_heuristics(monkeypatch):
    bench = _bench(["noise", "blur"])
    n = make_config("smoke").batch_size
    m, seen = _batches_while_training(monkeypatch, bench, assoc_ratio="0.3", mapper_steps=2)
    assert m.ratio(1) == 0.3 and len(m.mappers) == 2
    for t, b in seen:
        assoc = b.where(Batch.ASSOCIATION)
        assert len(b) == n and float(b.weight.sum()) == pytest.approx(1.0)
        if t == 0:  # no past task yet: the current pairs alone, alike
            assert not assoc.any() and torch.allclose(b.weight, torch.full((n,), 1 / n))
        else:  # r = 0.3 of the content loss on round(0.3 n) samples (balanced would give the one past task a half)
            assert int(assoc.sum()) == round(0.3 * n) and (b.task[assoc] == 0).all()
            assert float(b.weight[assoc].sum()) == pytest.approx(0.3) and float(b.weight[~assoc].sum()) == pytest.approx(0.7)
    assert {t for t, _ in seen} == {0, 1}
    # without the heuristics module (and the distillation on): no mapper is trained or kept, no association sample

    def refuse(self, task):
        raise AssertionError("a mapper was trained")

    from assocgan.methods.assoc import AssocGAN

    monkeypatch.setattr(AssocGAN, "mapper_step", refuse)
    m2, seen2 = _batches_while_training(monkeypatch, bench, heuristics=False, distill=True)
    assert m2.mappers == [] and m2.signatures == [] and m2.ratio(1) == 0.0
    assert all(not b.where(Batch.ASSOCIATION).any() and (b.task == t).all() for t, b in seen2)
    assert {t for t, _ in seen2} == {0, 1}
    assert set(m2.memory()) == {"distillation"} and m2.anchor.active


def test_memory_is_one_mapper_per_task_plus_the_anchor(noise_blur_method):
    m = noise_blur_method
    mem = m.memory()
    n_params_g = sum(p.numel() for p in m.ctx.G.parameters())
    mapper_params = sum(p.numel() for p in Mapper(m.settings.mapper_ngf, m.settings.mapper_blocks).parameters())
    assert mem["mappers"] == 3 * (2 * mapper_params + 4)  # float16 weights, the noise scale and the impulse shift
    # theta* in float16 for the weights of non-zero importance (--distill-keep), F in 4-bit codes for every weight
    kept = sum(int((f.float() > 0).sum()) for f in m.anchor.stored_importance.values())
    assert 0 < kept < n_params_g
    assert mem["distillation"] == 2 * kept + sum((p.numel() + 1) // 2 + 8 for p in m.ctx.G.parameters())
    assert mem["domain_signatures"] == 3 * (2 * 4 * 14 + 4)  # a mean and a spread of 14 features and the colour kept, per past task
    assert all(mp.dtype == torch.float16 for mapper in m.mappers for mp in mapper.parameters())
    assert m.memory_bytes() == sum(mem.values())
    assert module_bytes(m.mappers[0]) == 2 * mapper_params + 4


def test_fisher_matches_a_plain_per_sample_loop():
    torch.manual_seed(0)
    G = UNet(ngf=4)
    x, y = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    fast = per_sample_fisher(G, lambda call, xi, yi: per_sample_content_loss(call(xi), yi[None])[0], x, y, chunk=2)
    slow = {k: torch.zeros_like(p) for k, p in G.named_parameters()}
    G.eval()
    for i in range(5):
        G.zero_grad()
        per_sample_content_loss(G(x[i : i + 1]), y[i : i + 1]).sum().backward()
        for k, p in G.named_parameters():
            slow[k] += p.grad.pow(2) / 5
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-4, atol=1e-12)


def test_distillation_penalty_pulls_towards_the_anchor():
    torch.manual_seed(0)
    G = UNet(ngf=4)
    anchor = QuadraticAnchor()
    assert anchor.penalty() is None
    fisher = {k: torch.ones_like(p) for k, p in G.named_parameters()}
    anchor.update(G, fisher)
    at_anchor = float(anchor.penalty().detach())  # only the float16 rounding of theta*
    assert at_anchor < 1e-4
    theta_star = {k: p.detach().clone() for k, p in G.named_parameters()}
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dist = lambda: sum(float((p.detach() - theta_star[k]).pow(2).sum()) for k, p in G.named_parameters())
    before = dist()
    pen = anchor.penalty()
    assert float(pen.detach()) > 1000 * at_anchor
    opt = torch.optim.SGD(G.parameters(), lr=0.1)
    pen.backward()
    opt.step()
    assert dist() < before
    # a second task's importance adds to the first (online EWC)
    anchor.update(G, fisher)
    assert float(anchor.stored_importance[next(iter(fisher))].float().mean()) == pytest.approx(2.0)


@pytest.mark.parametrize("storage,per_weight", [("half", 4), ("8bit", 3), ("compact", 2.5)])
def test_compact_anchor_storage_keeps_the_penalty(storage, per_weight):
    torch.manual_seed(0)
    G = UNet(ngf=4)
    fisher = {k: torch.rand_like(p).pow(8) * 10.0 ** torch.randint(-12, -2, p.shape).float() for k, p in G.named_parameters()}
    exact = QuadraticAnchor(storage="half")
    exact.update(G, fisher)
    anchor = QuadraticAnchor(storage=storage)
    anchor.update(G, fisher)
    n = sum(p.numel() for p in G.parameters())
    assert per_weight * n <= anchor.memory_bytes() <= per_weight * n + 16 * len(fisher)
    at_anchor = float(anchor.penalty().detach())  # theta* in float16: only its rounding is left
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn_like(p))
    a, b = float(exact.penalty().detach()), float(anchor.penalty().detach())
    assert b == pytest.approx(a, rel=0.1)
    assert at_anchor < 1e-4 * b  # an 8-bit theta* (one scale per tensor) would leave a pull of the size of b itself


def test_penalty_is_absent_on_task_one_and_acts_after(monkeypatch):
    """No penalty while the first task trains; on the second, lambda' * 0.5 * sum F (theta - theta*)^2 with theta*
    the generator after the first task: zero but for float16 rounding at the start, growing as G leaves it."""
    from assocgan.methods.assoc import AssocGAN

    bench = _bench(["noise", "blur"])
    cfg = make_config(
        "smoke", steps=4, method_options={"assoc": {"mapper_steps": 2, "distill": True, "lambda_distill": 3.0, "distill_storage": "half", "distill_keep": 1.0}}
    )
    seen, kept = [], []
    original = AssocGAN.generator_loss

    def spy(self, step):
        out = original(self, step)
        hand = None
        if self.anchor.active:
            G = dict(self.ctx.G.named_parameters())
            theta = {k: v.float() for k, v in self.anchor.stored_theta.items()}
            hand = 3.0 * 0.5 * sum(float((f.float() * (G[k].detach() - theta[k]).pow(2)).sum()) for k, f in self.anchor.stored_importance.items())
        if step.t == 1:  # anchored at the generator after the first task
            assert all(torch.equal(self.anchor.stored_theta[k], kept[0][k].half()) for k in kept[0])
        seen.append((step.t, None if out is None else float(out.detach()), hand))
        return out

    monkeypatch.setattr(AssocGAN, "generator_loss", spy)
    recs = train_method("assoc", bench, cfg, on_task=lambda r: kept.append({k: p.detach().clone() for k, p in r.generator.named_parameters()}))
    m = recs[-1].method
    assert [v for t, v, _ in seen if t == 0] == [None] * cfg.steps
    assert "g_extra" not in recs[0].losses and recs[1].losses["g_extra"] > 0
    later = [(v, hand) for t, v, hand in seen if t == 1]
    assert len(later) == cfg.steps
    for v, hand in later:
        assert v == pytest.approx(hand, rel=1e-5)
    # theta* now is the generator after the last task (it moves to the newest weights), in float16
    assert all(torch.equal(m.anchor.stored_theta[k], kept[-1][k].half()) for k in kept[-1])
    values = [v for v, _ in later]
    assert values[0] < 0.01 * values[-1] and values == sorted(values)  # grows as G leaves theta*


def test_a_zero_weight_distillation_trains_exactly_as_no_distillation():
    """The Fisher's pairs come from a stream of their own: lambda' 0 with the Fisher computed leaves every draw
    of the run where ``--distill off`` has it, so settings of the distillation compare on the same data."""
    bench = _bench(["noise", "blur", "colorcast"], size=16, n_train=16)
    zero = _train(bench, steps=3, mapper_steps=2, distill=True, lambda_distill=0.0, fisher_samples=4)
    off = _train(bench, steps=3, mapper_steps=2, distill=False)
    assert zero.anchor.active and not off.anchor.active
    for (name, a), (_, b) in zip(zero.ctx.G.named_parameters(), off.ctx.G.named_parameters()):
        assert torch.equal(a, b), name


def test_the_generator_trains_the_same_with_the_mapper_beside_it_or_after_the_task(monkeypatch):
    """Whether the mapper trains beside the generator depends on the machine (a core to spare); its crops come
    from a stream of its own, so the same seed trains the very same generator either way."""
    from assocgan.methods.assoc import AssocGAN

    torch.set_num_threads(1)
    bench = _bench(["noise", "blur", "colorcast"], size=16, n_train=16)
    weights = []
    for spare in (True, False):
        monkeypatch.setattr(AssocGAN, "core_to_spare", lambda self, spare=spare: spare)
        m = _train(bench, steps=4, mapper_steps=6)
        weights.append({k: v.detach().clone() for k, v in m.ctx.G.named_parameters()})
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


@pytest.mark.parametrize("spare", [True, False])
def test_the_mapper_trains_beside_the_generator_only_with_a_core_to_spare(monkeypatch, spare):
    """With a core to spare the batch hook takes the mapper's share of steps with each batch (5 mapper steps over
    a task of 4 batches: 2, 3, 4, 5 done after each); without one, every step comes after the task."""
    from assocgan.methods.assoc import AssocGAN

    monkeypatch.setattr(AssocGAN, "core_to_spare", lambda self: spare)
    done_after_batch, original = [], AssocGAN.batch

    def spy(self, t, task):
        out = original(self, t, task)
        done_after_batch.append((t, self.trainer.done))
        return out

    monkeypatch.setattr(AssocGAN, "batch", spy)
    m = _train(_bench(["noise", "blur"], size=16, n_train=16), steps=4, mapper_steps=5)
    for t in (0, 1):
        assert [d for tt, d in done_after_batch if tt == t] == ([2, 3, 4, 5] if spare else [0, 0, 0, 0])
    assert len(m.mappers) == 2 and m.trainer is None


def test_the_default_keeps_no_anchor_and_computes_no_fisher(monkeypatch):
    """Heuristics alone by default: no curvature is computed, no penalty added, and the memory is the mappers
    and the domain signatures."""
    import assocgan.methods.assoc as assoc_module

    def refuse(*a, **k):
        raise AssertionError("a Fisher was computed")

    monkeypatch.setattr(assoc_module, "content_curvature", refuse)
    m = _train(_bench(["noise", "blur"], size=16, n_train=16), steps=2, mapper_steps=2)
    assert not m.anchor.active and m.generator_loss(None) is None
    assert set(m.memory()) == {"mappers", "domain_signatures"} and len(m.mappers) == 2


def test_a_distillation_option_without_the_distillation_is_a_clear_error(tmp_path, capsys):
    args = ["run", "--preset", "smoke", "--methods", "assoc", "--lambda-distill", "0.5", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--lambda-distill 0.5" in err and "--distill on" in err
    assert not (tmp_path / "r").exists()


def test_bad_assoc_ratio_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--preset", "smoke", "--methods", "assoc", "--assoc-ratio", "1.5", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "--assoc-ratio" in capsys.readouterr().err


# ---- association targets on a chain ------------------------------------------------------------------
class _Tint(torch.nn.Module):
    """A stand-in mapper that maps its input exactly to another domain: ``y * scale + shift`` per channel."""

    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = torch.tensor(scale).view(1, 3, 1, 1), torch.tensor(shift).view(1, 3, 1, 1)

    def forward(self, y):
        return (y * self.scale + self.shift).clamp(0, 1), torch.full_like(y, -7.0)

    def sample(self, y, gen=None):
        return self(y)[0]


def _chain_bench(first=None):
    """Three chained tasks on four colour domains: dark -> grey -> red -> green (task k's targets are task
    k+1's inputs), made from the same textures; ``first`` (per-channel factors) makes the first domain the grey
    one tinted instead of darkened (a task that loses colour)."""
    from assocgan.data.tasks import Task

    base = _bench(["noise"], n_train=16).tasks[0].train_y.float().div(255)
    dark, grey = base * 0.3, base * 0.5 + 0.25
    if first is not None:
        grey = grey.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        dark = grey * torch.tensor(first).view(1, 3, 1, 1)
    red, green = grey * torch.tensor([1.0, 0.3, 0.3]).view(1, 3, 1, 1), grey * torch.tensor([0.3, 1.0, 0.3]).view(1, 3, 1, 1)
    u8 = lambda v: v.mul(255).round().to(torch.uint8)
    domains = [u8(d) for d in (dark, grey, red, green)]
    return Benchmark("chain", "ssim", [Task(f"t{k}", domains[k], domains[k + 1], domains[k][:4], domains[k + 1][:4]) for k in range(3)])


def test_domain_targets_follow_a_chain_and_the_paper_target_does_not():
    bench = _chain_bench()
    m = _train(Benchmark("chain", "ssim", bench.tasks[:2]), steps=1, mapper_steps=1)
    # exact inverse mappers: task 0 made grey from dark, task 1 red from grey
    m._work = [_Tint([0.6, 0.6, 0.6], [-0.15, -0.15, -0.15]), _Tint([1.0, 1.0 / 0.3, 1.0 / 0.3], [0.0, 0.0, 0.0])]
    task = bench.tasks[2]  # red -> green
    m.before_task(2, task)
    assert m.plan == {1: "input", 0: 1}  # task 1's targets (red) are the current inputs; task 0's (grey) come from M_1
    assoc = m.make_associations(task, 64)
    sig = [m.signatures[j] for j in (0, 1)]
    for j in (0, 1):
        z = assoc.y[assoc.task == j]
        assert sig[j].distance(z) < min(s.distance(z) for k, s in enumerate(sig) if k != j) and sig[j].distance(z) < 2.0
        # each association sample is a pair of its own task: its source lies in that task's input domain
        assert torch.allclose(assoc.x[assoc.task == j], m._work[j].sample(z), atol=1e-6)
    assert DomainSignature(bench.tasks[0].train_x.float().div(255)).distance(assoc.x[assoc.task == 0]) < 2.0
    # the paper's eq. 3 labels every association sample with a current (green) target instead
    m.settings.assoc_target = "current"
    green = DomainSignature(task.train_y.float().div(255))
    assert green.distance(m.make_associations(task, 16).y) < 2.0


def test_recolour_turns_each_images_hue_and_keeps_its_grey_level():
    from assocgan.methods.assoc import recolour

    g = torch.Generator().manual_seed(0)
    grey = torch.rand(6, 1, 8, 8, generator=g) * 0.2 + 0.4
    x = (grey + torch.tensor([0.06, -0.03, -0.03]).view(1, 3, 1, 1)).clamp(0, 1)  # one reddish hue, no clipping after x2
    out = recolour(x, g)
    assert torch.allclose(out.mean(1), x.mean(1), atol=1e-5)  # the grey level is kept
    chroma = lambda a: (a - a.mean(1, keepdim=True)).flatten(1).norm(dim=1)
    gain = chroma(out) / chroma(x)
    assert ((gain >= 1 - 1e-4) & (gain <= 2 + 1e-4)).all() and float(gain.std()) > 0.05  # saturation scaled in [1, 2]
    hue = (out - out.mean(1, keepdim=True)).mean((2, 3))  # each image's colour direction
    assert float(hue.std(0).sum()) > 0.05  # drawn afresh for each image
    flat = grey.expand(-1, 3, -1, -1)
    assert torch.allclose(recolour(flat, g), flat, atol=1e-6)  # a grey image has no colour to turn


def test_a_task_that_loses_colour_reached_through_a_chain_gets_new_colours():
    """Cyan -> grey -> red -> green: task 0's inputs are made from grey images that M_1 makes of the current red
    inputs, and task 0 lost its colour (its targets are grey), so its association inputs get drawn colours, with
    their grey level kept; task 1 (reached directly) keeps its mapper's."""
    cyan = [0.7, 1.0, 1.0]
    bench = _chain_bench(first=cyan)
    m = _train(Benchmark("chain", "ssim", bench.tasks[:2]), steps=1, mapper_steps=1)
    assert m.colour_kept[0] < 0.05 and m.colour_kept[1] == 1.0  # grey sources: no colour to lose
    m._work = [_Tint(cyan, [0.0, 0.0, 0.0]), _Tint([1.0, 1.0 / 0.3, 1.0 / 0.3], [0.0, 0.0, 0.0])]
    task = bench.tasks[2]
    m.before_task(2, task)
    assert m.plan == {1: "input", 0: 1} and m.recolours(0) and not m.recolours(1)
    kept, m.colour_kept = m.colour_kept, [0.0, 0.0]
    assert not m.recolours(1)  # reached directly (the current inputs), even had it lost colour
    m.colour_kept = kept
    state = m.ctx.dgen.get_state()
    assoc = m.make_associations(task, 64)
    x0, z0 = assoc.x[assoc.task == 0], assoc.y[assoc.task == 0]
    mapped = m._work[0].sample(z0)
    inside = ((x0 > 0) & (x0 < 1)).all(1)  # pixels that no channel was clipped at
    assert float(inside.float().mean()) > 0.9
    assert torch.allclose(x0.mean(1)[inside], mapped.mean(1)[inside], atol=1e-5)  # the grey level kept
    hue = (x0 - x0.mean(1, keepdim=True)).mean((2, 3))
    assert float(hue.std(0).sum()) > 0.05  # not the mapper's one cyan
    assert torch.allclose(assoc.x[assoc.task == 1], m._work[1].sample(assoc.y[assoc.task == 1]), atol=1e-6)
    m.settings.assoc_recolour = "off"
    m.ctx.dgen.set_state(state)
    plain = m.make_associations(task, 64)
    assert not m.recolours(0)
    assert torch.allclose(plain.x[plain.task == 0], m._work[0].sample(plain.y[plain.task == 0]), atol=1e-6)
