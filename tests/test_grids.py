"""Sample grids: column headers, a gap between blocks and between task rows, each image's score under it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

from assocgan.data.benchmarks import load_benchmark
from assocgan.imaging import Picture, labelled_grid
from assocgan.metrics import Convention, scores
from assocgan.samples import method_picture, sample_picture


def _blocks(value: float, n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


def _ink(region: np.ndarray) -> bool:
    return bool((region < 200).any())


def test_labelled_grid_places_tiles_words_and_gaps():
    rows = [[_blocks(0.0), _blocks(0.5), _blocks(1.0)] for _ in range(2)]
    caps = [[["1.00", "2.00"], ["3.00", "4.00"], None] for _ in range(2)]
    pic = Picture(rows, ["input", "output", "target"], ["T1 a", "T2 b"], caps)
    img = labelled_grid(pic, pad=2, block_gap=12, font_size=11)
    line, top0 = 15, 17
    row_h = line + 16 + line
    # first row's tiles: below the header line and the row label
    top = top0 + line
    left_in, left_out = 2, 2 + (2 * 18 - 2) + 12
    assert (img[top : top + 16, left_in : left_in + 16] == 0).all()
    assert (img[top : top + 16, left_out : left_out + 16] == 128).all()
    # the block gap is white and wider than the gap between two images of a block
    assert (img[top : top + 16, left_out - 12 : left_out] == 255).all()
    # words: the headers above, the row label, a caption under each input and output, none under the targets
    assert _ink(img[:top0, left_in : left_in + 34]) and _ink(img[top0 : top0 + line, :40])
    assert _ink(img[top + 16 : top + 16 + line, left_out : left_out + 16])
    left_tgt = left_out + 34 + 12
    assert not _ink(img[top + 16 : top + 16 + line, left_tgt : left_tgt + 34])
    # the second task's row starts a block gap below the first
    top2 = top0 + row_h + 12 + line
    assert (img[top2 : top2 + 16, left_in : left_in + 16] == 0).all()
    assert (img[top0 + row_h : top0 + row_h + 12] == 255).all()


def test_sample_picture_scores_each_output_against_its_target():
    bench = load_benchmark("restore4", size=32, n_train=2, n_test=3, seed=0)
    method = SimpleNamespace(eval_generator=lambda j: nn.Identity())
    conv = Convention()
    pic = sample_picture("tl", bench, method, 1, 3, None, conv)
    assert pic.headers == ["input (PSNR)", "output: tl (PSNR)", "target"]
    assert pic.row_labels == ["T1 noise", "T2 impulse"] and len(pic.rows) == 2
    x, y = bench.tasks[1].test_pairs()
    want = [f"{float(v):.2f}" for v in scores(x[:3], y[:3], conv)["psnr"]]
    assert pic.captions[1][1] == want  # an identity generator scores as its input
    assert pic.captions[1][0] == want and pic.captions[1][2] is None


def test_method_picture_scores_against_its_reference_block():
    x = torch.rand(2, 3, 16, 16)
    pic = method_picture(Picture([[x, x.clone(), 1 - x]], ["real", "a", "b"], ["T1 t"], compare_to=0), None, "ssim", Convention())
    assert pic.captions[0][0] is None and pic.captions[0][1] == ["1.000", "1.000"]
    assert all(float(c) < 1 for c in pic.captions[0][2])
    bare = method_picture([[x, x]], [SimpleNamespace(name="t")], "psnr", Convention())
    assert bare.row_labels == ["T1 t"] and bare.captions is None
