"""The generator architectures (``--arch``): the registry, the gated U-Net's mechanisms, and every method on every
architecture."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from assocgan.config import make_config
from assocgan.data.benchmarks import load_benchmark
from assocgan.data.degradations import colorcast, fade
from assocgan.errors import UserError
from assocgan.methods import METHODS
from assocgan.metrics import psnr
from assocgan.nets import ARCHS, GatedUNet, UNet, build_generator


def test_every_architecture_is_a_setting_and_a_bad_one_is_refused():
    for name in ARCHS:
        assert make_config("smoke", arch=name).arch == name
    assert type(build_generator(make_config("smoke", arch="pix2pix"))) is UNet
    assert type(build_generator(make_config("smoke", arch="gated"))) is GatedUNet
    assert make_config("quick").arch == "pix2pix" and make_config("paper").arch == "pix2pix"
    with pytest.raises(UserError, match="--arch resnet: choose pix2pix or gated"):
        make_config("smoke", arch="resnet")


def test_a_configuration_saved_before_architectures_builds_the_unet_it_trained():
    saved = make_config("quick", arch="gated").to_dict()
    del saved["arch"]
    cfg = make_config("quick", base=saved)
    assert cfg.arch == "pix2pix" and cfg.context
    assert type(build_generator(cfg)) is UNet


def test_cli_takes_arch():
    from assocgan.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--arch", "gated", "--out", "x"])
    assert config_from_args(args).arch == "gated"
    args = build_parser().parse_args(["run", "--out", "x"])
    assert config_from_args(args).arch == "pix2pix"


@pytest.mark.parametrize("residual", [True, False])
def test_gated_unet_keeps_sizes_and_starts_as_the_identity_when_residual(residual):
    torch.manual_seed(0)
    G = GatedUNet(3, 3, 8, residual=residual).eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out = G(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if residual:
        assert torch.allclose(out, x, atol=1e-6)
    with torch.no_grad():  # a U-Net that corrects something: the untrained gate's FiLM and colour stage still change nothing
        G.unet.up[-1][1].weight.normal_(0, 0.02)
        assert torch.allclose(G(x), G.unet(x), atol=1e-6)
    g = G.weights(x)
    assert g.shape == (2, G.experts) and torch.allclose(g.sum(1), torch.ones(2))


def test_gated_colour_stage_is_an_exact_affine_map_and_the_gain_switches_the_unet_off():
    torch.manual_seed(0)
    G = GatedUNet(3, 3, 8).eval()
    for p in G.unet.parameters():  # a U-Net that corrects something
        p.data.add_(0.05 * torch.randn_like(p))
    M = torch.tensor([[1.2, 0.1, 0.0], [0.0, 0.9, 0.05], [-0.1, 0.0, 1.1]])
    b = torch.tensor([-0.05, 0.02, 0.1])
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        G.colour_matrix.copy_(M.expand_as(G.colour_matrix))
        G.colour_offset.copy_(b.expand_as(G.colour_offset))
        want = torch.einsum("ij,njhw->nihw", M, x) + b[:, None, None]
        assert (G(x) - want).abs().max() > 1e-2  # the U-Net's correction is on top
        G.gain.zero_()
        assert torch.allclose(G(x), want, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the gate and colour stage stay in float32
            assert torch.allclose(G(x), want, atol=1e-6)


def _pairs(n, size, degrade, gen):
    y = torch.rand(n, 3, size // 4, size // 4, generator=gen)
    y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False) * 0.8 + 0.1
    return degrade(y), y


def test_gated_unet_learns_two_global_corrections_at_once_and_routes_them_apart():
    """A faded print and a colour cast, mixed in every batch: the gate sends them to different experts and the
    jointly trained network beats doing nothing on both by a wide margin."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    tasks = [lambda y: fade(y, 0.3), lambda y: colorcast(y, 1.0)]
    G = GatedUNet(3, 3, 4)
    opt = torch.optim.Adam(G.parameters(), 3e-3)
    for _ in range(250):
        parts = [_pairs(4, 16, t, gen) for t in tasks]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        loss = F.mse_loss(G(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    G.eval()
    routes = []
    with torch.no_grad():
        for t in tasks:
            x, y = _pairs(16, 16, t, gen)
            gain = psnr(G(x).clamp(0, 1), y).mean() - psnr(x, y).mean()
            assert gain > 8, f"{gain:.2f} dB over doing nothing"
            routes.append(G.weights(x).argmax(1).mode().values.item())
    assert routes[0] != routes[1]


def test_every_method_trains_and_reloads_on_every_architecture(tmp_path):
    from assocgan.checkpoints import load_generator
    from assocgan.cli import main

    names = list(METHODS)
    for arch in ARCHS:
        out = tmp_path / arch
        rc = main(
            [
                "run",
                "--preset",
                "smoke",
                "--arch",
                arch,
                "--steps",
                "3",
                "--n-train",
                "8",
                "--lambda-adv",
                "1e-3",
                "--threads",
                "1",
                "--thanh-every",
                "2",
                "--liang-every",
                "2",
                "--methods",
                ",".join(names),
                "--out",
                str(out),
            ]
        )
        assert rc == 0
        res = json.loads((out / "results.json").read_text())
        assert res["config"]["arch"] == arch
        x = torch.rand(1, 3, 32, 32)
        for name in names:
            entry = res["methods"][name]
            assert entry["complete"] and len(entry["matrix"]) == len(res["tasks"]), name
            G = load_generator(out, name, task=1)
            inner = [m for m in G.modules() if isinstance(m, (UNet, GatedUNet))]
            assert type(inner[0]) is (GatedUNet if arch == "gated" else UNet), name
            with torch.no_grad():
                assert torch.isfinite(G(x)).all(), name


def test_mixed4_mixes_local_and_global_corrections():
    bench = load_benchmark("mixed4", size=32, n_train=4, n_test=2)
    assert bench.task_names == ["noise", "blur", "colorcast", "fade"]
    assert bench.metric == "psnr"
    assert [t.description for t in bench.tasks] == ["noise0.1", "blur3", "colorcast1", "fade0.3"]


def test_the_colour_stage_is_taught_on_its_own_in_training_only():
    """auxiliary_loss is the weighted MSE of the colour stage's output after a training forward, read once; an
    evaluation forward or one without gradients leaves none."""
    torch.manual_seed(0)
    G = GatedUNet(3, 3, 4)
    x, y = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    w = torch.tensor([0.5, 0.5, 0.0])
    G(x)
    import copy

    assert copy.deepcopy(G)._colour is None  # a copy (a method's teacher) leaves the stored output behind
    per = (x - y).pow(2).flatten(1).mean(1)  # an untrained colour stage is the identity
    assert torch.allclose(G.auxiliary_loss(y, w), (per * w).sum())
    assert G.auxiliary_loss(y, w) is None  # read once
    with torch.no_grad():
        G(x)
    assert G.auxiliary_loss(y) is None
    G.eval()
    G(x)
    assert G.auxiliary_loss(y) is None


def test_the_training_loop_adds_the_architecture_s_own_loss():
    from assocgan.train import train_method

    bench = load_benchmark("mixed4", size=32, n_train=4, n_test=2)
    bench.tasks = bench.tasks[2:]
    losses = {}
    for arch in ARCHS:
        cfg = make_config("smoke", arch=arch, steps=3, methods=["tl"])
        losses[arch] = train_method("tl", bench, cfg)[-1].losses
    assert losses["gated"]["arch"] > 0
    assert "arch" not in losses["pix2pix"]
