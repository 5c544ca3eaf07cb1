"""Built-in data: photos (offline), seeded crops, degradations, recipes, the tones3 chain, task order."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from assocgan.data import benchmarks, photos, tones
from assocgan.data.benchmarks import BUILTIN, apply_order, load_benchmark
from assocgan.data.degradations import KINDS, Degradation, parse_recipe
from assocgan.errors import UserError
from assocgan.metrics import psnr

SIZE = 32


# ---------------------------------------------------------------------------------------------
# helpers


def _pack(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW int32, one number per RGB pixel."""
    img = img.astype(np.int32)
    return (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]


def _locations(crop: np.ndarray, imgs: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """Every (photo, top, left) where the (3, s, s) uint8 ``crop`` occurs exactly in one of ``imgs`` (HxWx3)."""
    c = _pack(crop.transpose(1, 2, 0))
    s = c.shape[0]
    probes = [(s // 2, s // 3), (s - 1, s - 1), (s // 3, s - 2), (s - 1, 0)]
    found = []
    for p, img in enumerate(imgs):
        packed = _pack(img)
        h, w = packed.shape
        if h < s or w < s:
            continue
        ts, ls = np.nonzero(packed[: h - s + 1, : w - s + 1] == c[0, 0])
        for dy, dx in probes:
            keep = packed[ts + dy, ls + dx] == c[dy, dx]
            ts, ls = ts[keep], ls[keep]
        for top, left in zip(ts, ls):
            if np.array_equal(packed[top : top + s, left : left + s], c):
                found.append((p, int(top), int(left)))
    return found


def _hf_energy(x: torch.Tensor) -> float:
    """Mean squared difference of neighbouring pixels: the high-frequency energy of a batch."""
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return float(dx.pow(2).mean() + dy.pow(2).mean())


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    """Four real photo crops in [0, 1], (4, 3, 48, 48)."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(photos.random_crops(photos.builtin_photos("test"), 4, 48, rng)).float() / 255


@pytest.fixture(scope="module")
def smooth() -> torch.Tensor:
    """A smooth colour image (no 8x8 structure of its own), (1, 3, 64, 64)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    return torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * torch.sin(3 * xx + 2 * yy)])[None]


def _apply(recipe: str, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    (deg,) = parse_recipe(recipe)
    return deg(y.clone(), torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def r4() -> benchmarks.Benchmark:
    return load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=0)


# ---------------------------------------------------------------------------------------------
# built-in photos and benchmarks


def test_builtin_benchmarks_load_with_the_network_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # scikit-image turns a failed download into a silent pytest skip: make it a failure instead
    import skimage.data._fetchers as fetchers

    monkeypatch.setattr(fetchers, "_skip_pytest_case_requiring_pooch", lambda name: pytest.fail(f"tried to download {name}"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))

    r4 = load_benchmark("restore4", size=SIZE, n_train=4, n_test=2, seed=0)
    assert r4.metric == "psnr"
    assert r4.task_names == ["noise", "impulse", "oversharpen", "blur"]
    t3 = load_benchmark("tones3", size=SIZE, n_train=4, n_test=2, seed=0)
    assert t3.metric == "ssim"
    assert t3.task_names == ["sketch", "blueprint", "cartoon"]
    for bench in (r4, t3):
        for task in bench.tasks:
            assert task.train_y.shape == (4, 3, SIZE, SIZE) and task.train_y.dtype == torch.uint8
            assert task.test_x.shape == task.test_y.shape == (2, 3, SIZE, SIZE)
            assert task.train_y.float().std() > 5  # real image content, not blank
    for task in t3.tasks:
        assert not torch.equal(task.train_x, task.train_y)
        assert not torch.equal(task.test_x, task.test_y)
    for split in ("train", "test"):
        for img in photos.builtin_photos(split):
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_builtin_specs_match_the_listing(r4, capsys):
    """`assocgan benchmarks` lists each built-in benchmark with its metric and its tasks in order, each with its
    recipe or filter; restore4 loads as listed (names, order, metric, each task's degradation; tones3's loading
    is checked above)."""
    from assocgan.cli import main

    assert main(["benchmarks"]) == 0
    listing: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current = None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("Recipe degradations"):
            break
        if line and not line.startswith(" "):
            current = line.split()[0]
            listing[current] = (line.split("(")[1].split(")")[0], [])
        elif line.strip().startswith("T"):
            label, task, recipe = line.split()
            assert label == f"T{len(listing[current][1]) + 1}"
            listing[current][1].append((task, recipe))
    # the documented benchmarks: restore4 and mixed4 (PSNR) and tones3 (SSIM), the chain of the three tone filters
    assert {name: metric for name, (metric, _) in listing.items()} == {"restore4": "PSNR", "mixed4": "PSNR", "tones3": "SSIM"}
    assert [name for name, _ in listing["restore4"][1]] == ["noise", "impulse", "oversharpen", "blur"]
    assert listing["mixed4"][1] == [("noise", "noise:0.1"), ("blur", "blur:3"), ("colorcast", "colorcast:1"), ("fade", "fade:0.3")]
    assert [f for _, f in listing["tones3"][1]] == ["sketch", "blueprint", "cartoon"]
    assert all(f in tones.FILTERS for _, f in listing["tones3"][1])
    for name, (metric, tasks) in listing.items():
        assert BUILTIN[name].metric == metric.lower() and list(BUILTIN[name].tasks) == tasks
    # restore4 loads as listed: each task degraded by its recipe
    assert r4.metric == "psnr" and r4.task_names == [name for name, _ in listing["restore4"][1]]
    for task, (_, recipe) in zip(r4.tasks, listing["restore4"][1]):
        (deg,) = parse_recipe(recipe)
        assert task.degrade == deg and task.description == deg.name
        if not deg.random:
            assert torch.equal(task.test_x, benchmarks.to_uint8(deg(benchmarks.to_float(task.test_y))))
        else:
            ((kind, degree),) = deg.steps
            if kind == "noise":
                assert abs(float((task.test_x.float() - task.test_y.float()).std()) / 255 - degree) < 0.3 * degree
            else:
                assert kind == "impulse"
                hit = (task.test_x != task.test_y).any(1).float().mean()
                assert abs(float(hit) - degree) < 0.3 * degree


def test_builtin_photos_are_many_credited_and_split_by_photo():
    info = photos.manifest()
    files = [p.file for p in info]
    assert len(files) == len(set(files)) >= 50
    train, test = photos.photo_files("train"), photos.photo_files("test")
    assert not {p.name for p in train} & {p.name for p in test}
    assert 0.15 <= len(test) / len(files) <= 0.25
    credits = (photos.FOLDER / "CREDITS.md").read_text()
    for p in info:
        assert p.licence and p.package and p.source_path, p.file
        assert p.file in credits, f"{p.file} is not credited"
    # colour photos: no grey image among them
    for img in photos.builtin_photos("test") + photos.builtin_photos("train", 64):
        chroma = img.astype(float).std(axis=2).mean()
        assert chroma > 2, "a built-in photo is grey"
    # the test categories cover what the train split has (no category trained on but never tested, or v.v.)
    cats = {s: {p.category for p in info if p.split == s} for s in ("train", "test")}
    assert cats["train"] == cats["test"]


def test_crops_come_from_their_split_only(monkeypatch):
    monkeypatch.setattr(photos, "MAX_SCALE", 1.0)  # exact crops, so that each can be found in its photo
    bench = load_benchmark("restore4", size=SIZE, n_train=6, n_test=3, seed=0)
    short = photos.SHORT_SIDE * SIZE  # the benchmark crops the photos shrunk to this shorter side
    train, test = photos.builtin_photos("train", short), photos.builtin_photos("test", short)
    for task in bench.tasks:
        for crop in task.train_y.numpy():
            assert _locations(crop, train), f"{task.name}: a train crop is not from a train photo"
            assert not _locations(crop, test), f"{task.name}: a train crop comes from a test photo"
        for crop in task.test_y.numpy():
            assert _locations(crop, test), f"{task.name}: a test crop is not from a test photo"
            assert not _locations(crop, train), f"{task.name}: a test crop comes from a train photo"


def test_crops_come_at_several_scales():
    from PIL import Image

    rng = np.random.default_rng(0)
    shapes = [(320, 480), (100, 90)]
    boxes = photos.crop_boxes(shapes, 200, 32, rng)
    sides = np.array([b[3] for b in boxes])
    assert sides.min() >= 32 and sides.max() <= 4 * 32
    assert (sides < 48).mean() > 0.2 and (sides > 96).mean() > 0.1  # close-ups and wide views both
    for p, top, left, side in boxes:  # inside their photo, spread over the photos in turn
        h, w = shapes[p]
        assert 0 <= top <= h - side and 0 <= left <= w - side and side <= min(h, w)
    assert [b[0] for b in boxes[:4]] == [0, 1, 0, 1]
    img = (np.arange(120 * 100 * 3) % 251).astype(np.uint8).reshape(120, 100, 3)
    box = (0, 10, 5, 64)
    want = np.asarray(Image.fromarray(img[10:74, 5:69]).resize((32, 32), Image.LANCZOS)).transpose(2, 0, 1)
    assert np.array_equal(photos.cut(img, box, 32), want)


def test_crops_are_seeded(r4):
    again = load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=0)
    other = load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=1)
    for a, b, c in zip(r4.tasks, again.tasks, other.tasks):
        assert torch.equal(a.train_y, b.train_y)
        assert torch.equal(a.test_y, b.test_y)
        assert torch.equal(a.test_x, b.test_x)  # test inputs are fixed: rebuilding gives the same ones
        assert not torch.equal(a.train_y, c.train_y)
        assert not torch.equal(a.test_y, c.test_y)
    # each task has its own crops
    assert not torch.equal(r4.tasks[0].train_y, r4.tasks[1].train_y)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round()


def test_training_pairs_are_fixed_and_made_once_from_the_seed(r4):
    noise, blur = r4.tasks[0], r4.tasks[3]
    idx = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    x1, y1 = noise.pairs(idx, gen)
    x2, y2 = noise.pairs(idx, gen)
    assert torch.equal(y1, y2) and torch.equal(x1, x2)  # one stored source per target, as a dataset has
    assert torch.equal(_to_u8(x1), noise.train_x[idx].float())
    assert abs((x1 - y1).std().item() - noise.degrade.steps[0][1]) < 0.03  # one noise draw of the right level
    assert not torch.equal(noise.train_x[0], noise.train_x[1])
    # a deterministic task's stored source is its degradation of the target (to uint8 rounding)
    bx, by = blur.pairs(idx, gen)
    assert (bx - blur.degrade(by)).abs().max() <= 0.5 / 255 + 1e-6
    # the same pairs whenever the benchmark is built from the same seed; other pairs from another seed
    again = load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=0).tasks[0]
    assert torch.equal(again.train_x, noise.train_x) and torch.equal(again.test_x, noise.test_x)
    # samples come with random flips and random indices, as floats in [0, 1]
    sx, sy = noise.sample(6, gen)
    assert sx.shape == sy.shape == (6, 3, SIZE, SIZE) and sx.dtype == torch.float32
    assert 0 <= sx.min() and sx.max() <= 1
    # test pairs are stored, not drawn
    tx1, ty1 = noise.test_pairs()
    tx2, ty2 = noise.test_pairs()
    assert torch.equal(tx1, tx2) and torch.equal(ty1, ty2)
    assert not torch.equal(tx1, ty1)
    bx, byy = blur.test_pairs()
    assert (bx - blur.degrade(byy)).abs().max() <= 0.5 / 255 + 1e-6


def test_fresh_degradations_draw_sources_anew():
    fixed = load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=0)
    fresh = load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=0, fresh=True)
    noise, blur = fresh.tasks[0], fresh.tasks[3]
    idx = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    x1, y1 = noise.pairs(idx, gen)
    x2, _ = noise.pairs(idx, gen)
    assert not torch.equal(x1, x2)  # a new noise draw for the same images at every draw
    assert abs((x1 - y1).std().item() - noise.degrade.steps[0][1]) < 0.03
    b1, by = blur.pairs(idx, gen)
    assert torch.allclose(b1, blur.degrade(by), atol=1e-6)  # deterministic kinds give the same source
    for a, b in zip(fixed.tasks, fresh.tasks):  # the same crops, the same stored pairs and test pairs
        assert torch.equal(a.train_y, b.train_y) and torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
        x, y = b.stored_pairs(idx)
        assert torch.equal(_to_u8(x), b.train_x[idx].float())
    with pytest.raises(UserError, match="--fresh-degradations"):
        load_benchmark("tones3", size=SIZE, n_train=2, n_test=1, fresh=True)


def test_pair_bytes_counts_uint8_pairs(r4):
    task = r4.tasks[0]
    assert task.pair_bytes() == 2 * 8 * 3 * SIZE * SIZE
    assert task.pair_bytes(3) == 2 * 3 * 3 * SIZE * SIZE


# ---------------------------------------------------------------------------------------------
# degradations


@pytest.mark.parametrize(
    "recipe",
    [
        "blur:1.5",
        "noise:0.3",
        "jpeg:20",
        "downscale:3",
        "motion:7",
        "impulse:0.1",
        "oversharpen:2",
        "lowlight:0.4",
        "colorcast:1",
        "fade:0.3",
        "blur:1+noise:0.1+jpeg:30",
    ],
)
def test_degradation_keeps_shape_and_range(clean, recipe):
    before = clean.clone()
    out = _apply(recipe, clean)
    assert torch.equal(clean, before)  # the input is not changed in place
    assert out.shape == clean.shape and out.dtype == clean.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, clean, atol=1e-3)
    # the same generator seed gives the same output
    assert torch.equal(out, _apply(recipe, clean))


def test_every_kind_is_covered(clean):
    """Each documented degradation kind is known to recipes and to the listing, degrades an image at any degree
    of its range (a different image at another degree), keeps [0, 1], refuses degrees outside its range, and is
    random (a new draw with another seed) exactly when it says so."""
    assert set(KINDS) == {"blur", "noise", "jpeg", "downscale", "motion", "impulse", "oversharpen", "lowlight", "colorcast", "fade"}
    for name, kind in KINDS.items():
        lo, hi = kind.low + 0.25 * (kind.high - kind.low), kind.low + 0.75 * (kind.high - kind.low)
        a, b = _apply(f"{name}:{lo:g}", clean), _apply(f"{name}:{hi:g}", clean)
        for out in (a, b):
            assert out.shape == clean.shape and 0 <= out.min() and out.max() <= 1, name
            assert float(psnr(out, clean).mean()) < 40, name  # a real degradation, not the image
        assert float((a - b).abs().mean()) > 1e-3, name  # the degree matters
        assert torch.equal(a, _apply(f"{name}:{lo:g}", clean)), name  # the same seed, the same image
        other_seed = _apply(f"{name}:{lo:g}", clean, seed=1)
        assert torch.equal(a, other_seed) != kind.random, name
        (deg,) = parse_recipe(f"{name}:{lo:g}")
        assert deg.random == kind.random and deg.steps == ((name, float(f"{lo:g}")),)
        span = kind.high - kind.low
        for bad in (kind.low - 0.01 * span, kind.high + 0.01 * span):
            with pytest.raises(UserError, match=name):
                parse_recipe(f"{name}:{bad:g}")


def test_blur_degree_lowers_high_frequencies(clean):
    e = [_hf_energy(_apply(f"blur:{s}", clean)) for s in (0.5, 1, 2, 4)]
    assert _hf_energy(clean) > e[0] > e[1] > e[2] > e[3]
    assert e[3] < 0.1 * _hf_energy(clean)
    # a blur keeps the mean (kernel sums to 1)
    assert abs(_apply("blur:2", clean).mean() - clean.mean()) < 0.01


def test_noise_residual_std_is_sigma():
    grey = torch.full((4, 3, 48, 48), 0.5)
    for sigma in (0.02, 0.05, 0.1):
        r = _apply(f"noise:{sigma}", grey) - grey
        assert abs(r.std().item() - sigma) < 0.05 * sigma
        assert abs(r.mean().item()) < 0.1 * sigma
    # different seeds give different noise; Kind says it is random
    assert not torch.equal(_apply("noise:0.1", grey, 0), _apply("noise:0.1", grey, 1))
    assert KINDS["noise"].random and not KINDS["blur"].random


def test_jpeg_quality_and_a_real_codec(clean, smooth):
    scores = [float(psnr(_apply(f"jpeg:{q}", clean), clean).mean()) for q in (10, 50, 90)]
    assert scores[0] < scores[1] < scores[2]
    assert scores[2] < 60  # even quality 90 is lossy: not the input
    out = _apply("jpeg:95", clean)
    assert not torch.equal(out, clean)
    # decoded 8-bit images
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)

    # 8x8 block artifacts: at low quality, steps across block borders exceed steps inside blocks
    def blockiness(x: torch.Tensor) -> float:
        d = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(0, 1, 2))
        border = torch.arange(d.numel()) % 8 == 7
        return float(d[border].mean() / d[~border].mean())

    assert blockiness(smooth) < 1.1
    assert blockiness(_apply("jpeg:10", smooth)) > 1.5
    assert blockiness(_apply("jpeg:10", smooth)) > blockiness(_apply("jpeg:90", smooth))


def test_downscale_degree(clean):
    e = [_hf_energy(_apply(f"downscale:{f}", clean)) for f in (1.5, 2, 4)]
    assert _hf_energy(clean) > e[0] > e[1] > e[2]
    p = [float(psnr(_apply(f"downscale:{f}", clean), clean).mean()) for f in (1.5, 2, 4)]
    assert p[0] > p[1] > p[2]
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(_apply("downscale:4", flat), flat, atol=1e-5)


def test_motion_blur_degree_and_random_direction(clean):
    e = [_hf_energy(_apply(f"motion:{n}", clean)) for n in (3, 9, 21)]
    assert _hf_energy(clean) > e[0] > e[1] > e[2]
    flat = torch.full((2, 3, 32, 32), 0.6)
    assert torch.allclose(_apply("motion:9", flat), flat, atol=1e-5)  # kernel sums to 1
    same = clean[:1].repeat(4, 1, 1, 1)
    out = _apply("motion:15", same)
    # one direction per image: the same image blurred four times gives different results
    assert not torch.allclose(out[0], out[1], atol=1e-3) or not torch.allclose(out[0], out[2], atol=1e-3)
    assert not torch.equal(_apply("motion:15", same, 0), _apply("motion:15", same, 1))
    # a horizontal-only kernel would leave horizontal stripes untouched: check the blur is directional
    stripes = torch.zeros(1, 3, 32, 32)
    stripes[..., ::4, :] = 1
    outs = [_apply("motion:9", stripes, seed) for seed in range(6)]
    kept = [float((o - stripes).abs().mean()) for o in outs]
    assert max(kept) - min(kept) > 0.05  # how much the stripes are smeared depends on the direction


def test_lowlight_darkens(clean):
    a, b = _apply("lowlight:0.2", clean), _apply("lowlight:0.6", clean)
    assert a.mean() < b.mean() < clean.mean()
    assert (b <= clean + 1e-6).all()
    assert torch.allclose(b, 0.6 * clean.pow(1.4), atol=1e-6)


def test_impulse_turns_its_share_of_pixels_black_or_white(clean):
    clean = clean.clamp(0.02, 0.98)  # no channel already black or white
    out = _apply("impulse:0.2", clean, 1)
    changed = (out != clean).any(1)  # (N, H, W): a pixel is hit in all three channels or in none
    assert torch.equal((out != clean).all(1) | ~changed, torch.ones_like(changed))
    hit = out.permute(0, 2, 3, 1)[changed]
    assert ((hit == 0).all(1) | (hit == 1).all(1)).all()  # black or white, never a colour
    assert 0.15 < float(changed.float().mean()) < 0.25
    assert 0.35 < float((hit == 1).all(1).float().mean()) < 0.65  # salt and pepper alike
    assert not torch.equal(out, _apply("impulse:0.2", clean, 2))  # drawn from the seed


def test_oversharpen_amplifies_detail_and_leaves_flat_areas_alone(clean):
    def detail(x):
        return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())

    mild, strong = _apply("oversharpen:0.5", clean), _apply("oversharpen:2", clean)
    assert detail(strong) > detail(mild) > detail(clean)
    flat = torch.full((1, 3, 32, 32), 0.4)
    assert torch.allclose(_apply("oversharpen:2", flat), flat, atol=1e-6)


def test_colorcast_shifts_channel_means(clean):
    mild, strong = _apply("colorcast:0.3", clean), _apply("colorcast:1", clean)
    m0, m1, m2 = clean.mean((0, 2, 3)), mild.mean((0, 2, 3)), strong.mean((0, 2, 3))
    assert m2[0] > m1[0] > m0[0]  # red up
    assert m2[2] < m1[2] < m0[2]  # blue down
    assert (m2[0] - m2[2]) - (m0[0] - m0[2]) > 0.2


def test_fade_lifts_blacks_lowers_contrast_and_yellows(clean):
    from assocgan.data.degradations import FADE_TINT

    mild, strong = _apply("fade:0.1", clean), _apply("fade:0.5", clean)
    tint = torch.tensor(FADE_TINT).view(1, 3, 1, 1)
    assert (strong >= 0.5 * tint - 1e-6).all()  # nothing darker than the lifted black
    assert torch.allclose(strong, 0.5 * clean + 0.5 * tint)
    assert clean.std() > mild.std() > strong.std()  # contrast lost with the amount
    assert strong.mean((0, 2, 3))[2] < strong.mean((0, 2, 3))[0]  # yellowed: blue below red


# ---------------------------------------------------------------------------------------------
# recipes


def test_parse_recipe_tasks_and_chains(clean):
    degs = parse_recipe("blur:3,noise:0.2,jpeg:10")
    assert len(degs) == 3
    assert [d.steps for d in degs] == [(("blur", 3.0),), (("noise", 0.2),), (("jpeg", 10.0),)]
    assert [d.name for d in degs] == ["blur3", "noise0.2", "jpeg10"]
    assert [d.random for d in degs] == [False, True, False]

    (chain,) = parse_recipe(" Blur:2 + noise:0.05 ")
    assert chain.steps == (("blur", 2.0), ("noise", 0.05))
    assert chain.name == "blur2+noise0.05"
    assert chain.random
    # applied in order, with the one generator
    got = chain(clean, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    want = KINDS["noise"].fn(KINDS["blur"].fn(clean, 2.0, g), 0.05, g)
    assert torch.equal(got, want)
    assert isinstance(chain, Degradation)


@pytest.mark.parametrize(
    "recipe,named",
    [
        ("blur:3,sharpen:2", "sharpen"),
        ("blurr:3", "blurr"),
        ("noise:5", "noise"),  # out of range
        ("jpeg:0", "jpeg"),
        ("blur:-1", "blur"),
        ("motion:100", "motion"),
        ("blur:3,jpeg", "jpeg"),  # missing number
        ("noise:", "noise"),
        ("blur:abc", "blur"),
        ("blur:2+noise", "noise"),
    ],
)
def test_bad_recipe_items_raise_user_error_naming_the_item(recipe, named):
    with pytest.raises(UserError) as err:
        parse_recipe(recipe)
    msg = str(err.value)
    assert named in msg and "--recipe" in msg
    assert "\n" not in msg


def test_out_of_range_message_gives_the_degree_and_bounds():
    with pytest.raises(UserError, match=r"noise.*5.*\[0\.001, 1\]"):
        parse_recipe("noise:5")


def test_empty_recipe_items():
    for recipe in ("blur:3,,noise:0.1", "", "blur:3,"):
        with pytest.raises(UserError, match="--recipe"):
            parse_recipe(recipe)


# ---------------------------------------------------------------------------------------------
# tones3: a chain of filters


@pytest.fixture(scope="module")
def tiny_photos() -> dict[str, list[np.ndarray]]:
    from skimage import data as skdata

    return {
        "train": [skdata.astronaut()[100:140, 180:220].copy(), skdata.rocket()[200:240, 300:340].copy()],
        "test": [skdata.coffee()[150:190, 250:290].copy()],
    }


def test_tone_filters_change_the_image(tiny_photos):
    img = tiny_photos["train"][0]
    for name, f in tones.FILTERS.items():
        out = f(img)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(float) - img).mean() > 8, name
        assert np.array_equal(out, f(img)), name  # deterministic
    # each filter of the chain changes the previous filter's output too
    v = img
    for name, f in tones.FILTERS.items():
        nxt = f(v)
        assert np.abs(nxt.astype(float) - v).mean() > 5, name
        v = nxt


def test_tones3_each_source_is_the_previous_target(monkeypatch, tiny_photos):
    monkeypatch.setattr(photos, "builtin_photos", lambda split, short_side=None: [p.copy() for p in tiny_photos[split]])
    monkeypatch.setattr(photos, "MAX_SCALE", 1.0)  # exact crops, so that each can be found in its photo
    s = 16
    bench = load_benchmark("tones3", size=s, n_train=6, n_test=3, seed=0)
    names = [f for _, f in BUILTIN["tones3"].tasks]
    assert bench.task_names == names
    versions = {}
    for split in ("train", "test"):
        v = [tiny_photos[split]]
        for n in names:
            v.append([tones.FILTERS[n](im) for im in v[-1]])
        versions[split] = v
    for k, task in enumerate(bench.tasks):
        for split, xs, ys in (("train", task.train_x, task.train_y), ("test", task.test_x, task.test_y)):
            v = versions[split]
            for x, y in zip(xs.numpy(), ys.numpy()):
                locs = _locations(x, v[k])  # the source is a crop of version k (task k-1's target domain)
                assert locs, f"task {k} {split}: source crop not found in version {k}"
                assert any(np.array_equal(v[k + 1][p][t : t + s, l : l + s].transpose(2, 0, 1), y) for p, t, l in locs), (
                    f"task {k} {split}: target is not the filtered source at the same place"
                )
        if k > 0:
            # task k's train sources come from the same photos (version k) as task k-1's train targets
            prev = bench.tasks[k - 1]
            assert all(_locations(y, versions["train"][k]) for y in prev.train_y.numpy())
            assert all(_locations(x, versions["train"][k]) for x in task.train_x.numpy())
            assert task.description.startswith(prev.name)
    assert bench.tasks[0].description.startswith("photo")


# ---------------------------------------------------------------------------------------------
# task order


def test_apply_order_by_names_and_positions(r4):
    tasks = r4.tasks
    assert apply_order(tasks, None) is tasks
    out = apply_order(tasks, "oversharpen, noise,4,2")
    assert [t.name for t in out] == ["oversharpen", "noise", "blur", "impulse"]
    assert out[0] is tasks[2]
    assert [t.name for t in apply_order(tasks, "4,3,2,1")] == ["blur", "oversharpen", "impulse", "noise"]


@pytest.mark.parametrize("order,named", [("noise,sharpen", "sharpen"), ("1,5", "5"), ("0,1", "0"), ("1,noise", "twice"), ("blur,blur", "twice")])
def test_apply_order_errors(r4, order, named):
    with pytest.raises(UserError) as err:
        apply_order(r4.tasks, order)
    assert "--order" in str(err.value) and named in str(err.value)


def test_order_keeps_each_tasks_data(r4):
    reordered = load_benchmark("restore4", size=SIZE, n_train=8, n_test=3, seed=0, order="blur,impulse,noise,oversharpen")
    assert reordered.task_names == ["blur", "impulse", "noise", "oversharpen"]
    by_name = {t.name: t for t in r4.tasks}
    for t in reordered.tasks:
        assert torch.equal(t.test_x, by_name[t.name].test_x)
        assert torch.equal(t.train_y, by_name[t.name].train_y)
    with pytest.raises(UserError, match="--order: unknown task 'photo'"):
        load_benchmark("restore4", size=SIZE, n_train=2, n_test=1, order="blur,noise,photo")


def test_load_benchmark_option_errors():
    with pytest.raises(UserError, match="--benchmark 'restore5'"):
        load_benchmark("restore5", size=SIZE, n_train=2, n_test=1)
    with pytest.raises(UserError, match="--size 40"):
        load_benchmark("restore4", size=40, n_train=2, n_test=1)
    with pytest.raises(UserError, match="--metric"):
        load_benchmark("restore4", size=SIZE, n_train=2, n_test=1, metric="mse")
    with pytest.raises(UserError, match="--recipe"):
        load_benchmark("restore4", size=SIZE, n_train=2, n_test=1, recipe="blur:2")
    assert load_benchmark("restore4", size=SIZE, n_train=2, n_test=1, metric="ssim").metric == "ssim"


# ---- the paper's scale on the built-in photos -------------------------------------------------------
def test_paper_preset_on_builtin_photos_warns_how_few_they_are():
    from assocgan.config import make_config

    cfg = make_config("paper")
    n_train, n_test = len(photos.photo_files("train")), len(photos.photo_files("test"))
    note = benchmarks.builtin_photos_note(cfg.benchmark, cfg.size, cfg.n_train, cfg.n_test)
    assert f"2000 training crops of 224 px per task from {n_train} built-in photos" in note
    assert f"100 test crops from {n_test}" in note and "--clean-images DIR --recipe" in note and "--data ROOT" in note
    room = photos.disjoint_crops(photos.photo_sizes("train"), 224)
    assert n_train <= room < 2000 and f"about {room} " in note  # at least one 224 px crop a photo, far fewer than 2000
    # the quick preset's crops fit the photos; a user's own data is theirs to size
    quick = make_config("quick")
    assert benchmarks.builtin_photos_note("tones3", quick.size, quick.n_train, quick.n_test) is None
    assert benchmarks.builtin_photos_note("restore4", 224, 2000, 100, clean_images="photos/") is None
    assert benchmarks.builtin_photos_note("restore4", 224, 2000, 100, data="pairs/") is None


def test_a_paper_scale_run_prints_the_warning_once_at_its_start(tmp_path, monkeypatch, capsys):
    """Printed before the benchmark is built (the run here stops there), once, and kept in the run's log."""
    from assocgan import runner
    from assocgan.cli import main

    def stop(*a, **kw):
        raise UserError("stopped after the start")

    monkeypatch.setattr(runner, "benchmark_for", stop)
    assert main(["run", "--preset", "paper", "--methods", "tl", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("assocgan: warning: restore4 cuts its 2000 training crops of 224 px") == 1
    assert err.index("warning") < err.index("stopped after the start")
    assert main(["run", "--preset", "quick", "--methods", "tl", "--out", str(tmp_path / "run")]) == 2
    assert "warning" not in capsys.readouterr().err


def test_a_paper_scale_study_carries_the_warning(tmp_path):
    from assocgan import studies
    from assocgan.config import make_config

    assert "2000 training crops" in studies.make_study("quota", make_config("paper", methods=["tl"]), tmp_path, methods=["tl"]).note
    assert studies.make_study("quota", make_config("smoke", methods=["tl"]), tmp_path, methods=["tl"]).note is None
