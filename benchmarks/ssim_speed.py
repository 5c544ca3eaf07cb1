"""SSIM's speed and agreement with scikit-image, side by side in one run.

    python benchmarks/ssim_speed.py                     # 8 images of 224 px, RGB
    python benchmarks/ssim_speed.py --size 64 --n 32

Times ``assocgan.metrics.ssim`` (the window as two 1-D passes over the five local means at once, float64), the
same formula with the 11x11 window as one 2-D convolution per map (as ``metrics.ssim`` computed it before), and
``skimage.metrics.structural_similarity`` (Gaussian weights, sigma 1.5, population covariance, data range 1)
image by image; prints each one's seconds (the best of ``--repeats``), the ratios, and the largest difference
from scikit-image over the images.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from assocgan.metrics import gaussian_1d, ssim


def ssim_2d(pred: torch.Tensor, target: torch.Tensor, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The same SSIM with the window as one 11x11 convolution of each map: the earlier implementation."""
    n, c, h, w = pred.shape
    x, y = pred.double().reshape(n * c, 1, h, w), target.double().reshape(n * c, 1, h, w)
    g = gaussian_1d(win_size, sigma)
    win = torch.outer(g, g)[None, None]
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    sxx, syy, sxy = F.conv2d(x * x, win) - mu_x**2, F.conv2d(y * y, win) - mu_y**2, F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.reshape(n, c, -1).mean(2).mean(1).float()


def skimage_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    a, b = pred.double().permute(0, 2, 3, 1).numpy(), target.double().permute(0, 2, 3, 1).numpy()
    return torch.tensor(
        [structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1) for p, t in zip(a, b)]
    )


def best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as torch chooses)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(args.n, 3, args.size, args.size, generator=gen)
    pred = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    rows = {
        "assocgan (separable)": lambda: ssim(pred, target),
        "earlier (2-D window)": lambda: ssim_2d(pred, target),
        "scikit-image": lambda: skimage_ssim(pred, target),
    }
    results = {name: best_of(fn, args.repeats) for name, fn in rows.items()}
    ref = results["scikit-image"][1]
    fast = results["assocgan (separable)"][0]
    print(f"SSIM of {args.n} RGB images of {args.size} px, best of {args.repeats}, {torch.get_num_threads()} thread(s)")
    print("| implementation | seconds | / assocgan | largest difference from scikit-image |")
    print("|---|---:|---:|---:|")
    for name, (sec, out) in results.items():
        diff = float((out.double() - ref).abs().max())
        print(f"| {name} | {sec:.4f} | {sec / fast:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
