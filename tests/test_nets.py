"""The U-Net generator and the conditional PatchGAN discriminator: sizes, identity at init, pix2pix init."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from assocgan.nets import PatchGAN, UNet, init_weights


@pytest.mark.parametrize("ngf", [4, 8, 12])
@pytest.mark.parametrize("size", [16, 32, 48, 80])
@pytest.mark.parametrize("residual", [True, False])
def test_unet_keeps_any_multiple_of_16(ngf, size, residual):
    torch.manual_seed(0)
    G = UNet(3, 3, ngf, residual=residual).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = G(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_unet_non_square_and_output_range():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        out = UNet(3, 3, 8, residual=False).eval()(x)
    assert out.shape == x.shape
    # without the residual the output is tanh mapped to [0, 1]
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("shape", [(24, 24), (40, 40), (17, 32), (32, 8), (32, 33)])
def test_unet_rejects_other_sizes(shape):
    G = UNet(3, 3, 4)
    with pytest.raises(ValueError, match="16"):
        G(torch.rand(1, 3, *shape))


def test_unet_encoder_widths_follow_ngf():
    G = UNet(3, 3, ngf=64)
    widths = [[m for m in block if isinstance(m, nn.Conv2d)][0].out_channels for block in G.down]
    assert widths == [64, 128, 256, 512]
    assert [m.out_channels for m in G.down[0] if isinstance(m, nn.Conv2d)] == [64]
    last = [m for m in G.up[-1] if isinstance(m, nn.ConvTranspose2d)][0]
    assert last.out_channels == 3


@pytest.mark.parametrize("ngf", [4, 8, 16])
def test_residual_unet_is_near_identity_at_init(ngf):
    from skimage import data as skdata

    img = torch.from_numpy(skdata.astronaut()[100:164, 150:214].copy()).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(0)
    res = UNet(3, 3, ngf, residual=True).eval()
    torch.manual_seed(0)
    plain = UNet(3, 3, ngf, residual=False).eval()
    with torch.no_grad():
        err_res = (res(img) - img).abs().mean().item()
        err_plain = (plain(img) - img).abs().mean().item()
    assert err_res < 0.1
    assert err_res < 0.35 * err_plain
    # the plain pix2pix output at init is close to mid grey, not the input
    assert err_plain > 0.15


# pix2pix PatchGAN with the number of stride-2 layers cut for small images: side = size / 2**L - 2,
# L = max(1, min(3, floor(log2(size)) - 4))
@pytest.mark.parametrize("size,side", [(16, 6), (32, 14), (48, 22), (64, 14), (128, 14), (256, 30)])
def test_patchgan_output_shape(size, side):
    torch.manual_seed(0)
    D = PatchGAN(6, 8, image_size=size).eval()
    x, y = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
    with torch.no_grad():
        out = D(x, y)
    assert out.shape == (2, 1, side, side)
    assert side >= 2  # at least a 2x2 grid of patches


def test_patchgan_default_is_pix2pix_70x70():
    D = PatchGAN(6, 8)  # no image size: three layers, 30x30 patches at 256 px as in pix2pix
    with torch.no_grad():
        out = D(torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 256))
    assert out.shape == (1, 1, 30, 30)
    with torch.no_grad():
        out = PatchGAN(6, 8, image_size=64)(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 1, 14, 22)


def test_patchgan_is_conditional():
    torch.manual_seed(0)
    D = PatchGAN(6, 8, image_size=32).eval()
    y = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = D(torch.rand(1, 3, 32, 32), y)
        b = D(torch.rand(1, 3, 32, 32), y)
    assert not torch.allclose(a, b)  # the score depends on the source x, not only on y
    with pytest.raises(RuntimeError):
        D(y, torch.rand(1, 2, 32, 32))  # it takes x and y of 3 channels each


def _check_pix2pix_init(net: nn.Module) -> None:
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs
    big = [m for m in convs if m.weight.numel() >= 2000]
    assert big
    for m in big:
        w = m.weight.detach()
        assert abs(w.std().item() - 0.02) < 0.003, (m, w.std().item())
        assert abs(w.mean().item()) < 0.003
    all_w = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(all_w.std().item() - 0.02) < 0.001
    for m in convs:
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
    norms = [m for m in net.modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) and m.weight is not None]
    assert norms
    scales = torch.cat([m.weight.detach().flatten() for m in norms])
    assert abs(scales.mean().item() - 1) < 0.01 and 0.01 < scales.std().item() < 0.03
    assert all(torch.count_nonzero(m.bias) == 0 for m in norms)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_pix2pix_init_statistics(norm):
    torch.manual_seed(0)
    _check_pix2pix_init(UNet(3, 3, 16, norm=norm))
    _check_pix2pix_init(PatchGAN(6, 16, norm=norm, image_size=64))


def test_init_weights_resets_a_default_initialised_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 32, 4), nn.InstanceNorm2d(32, affine=True))
    assert abs(net[0].weight.std().item() - 0.02) > 0.01  # PyTorch's default init is wider
    init_weights(net)
    assert abs(net[0].weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(net[0].bias) == 0


def test_unet_trains_on_a_batch():
    """One optimiser step lowers the loss: gradients reach the weights through every path."""
    torch.manual_seed(0)
    G = UNet(3, 3, 8)
    x = torch.rand(4, 3, 32, 32)
    y = (x * 0.5).detach()
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = nn.functional.mse_loss(G(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in G.parameters())


def test_image_statistics_per_channel():
    from assocgan.nets.unet import image_statistics

    x = torch.rand(3, 3, 16, 16) * 2 - 1
    s = image_statistics(x)
    assert s.shape == (3, 12)
    flat = x.flatten(2)
    assert torch.allclose(s[:, :3], flat.mean(2), atol=1e-6)
    assert torch.allclose(s[:, 3:6], flat.std(2), atol=1e-6)
    assert torch.allclose(s[:, 6:9], torch.quantile(flat, 0.02, dim=2), atol=1e-6)
    assert torch.allclose(s[:, 9:], torch.quantile(flat, 0.98, dim=2), atol=1e-6)


def test_global_context_starts_inert_and_takes_part_in_training():
    """The context starts as the plain U-Net (same outputs with the same U-Net weights); once the output layer
    has moved, the context's parameters receive gradients and its modulation depends on the image's level."""
    torch.manual_seed(0)
    ctx = UNet(3, 3, 8, context=True)
    plain = UNet(3, 3, 8)
    plain.load_state_dict({k: v for k, v in ctx.state_dict().items() if not k.startswith("context.")})
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(plain(x), ctx(x), atol=1e-6)
    opt = torch.optim.Adam(ctx.parameters(), lr=1e-3)
    y = x.flip(-1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(ctx(x), y).backward()
        opt.step()
    assert ctx.context.mlp[-1].weight.grad.abs().sum() > 0
    dark, bright = ctx.context(x * 0.3 * 2 - 1), ctx.context(x * 2 - 1)
    assert not torch.allclose(dark[0][0], bright[0][0])  # the scale depends on the global level
