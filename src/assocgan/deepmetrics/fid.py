"""Set-level metrics on feature vectors: the Frechet distance (FID) and the kernel distance (KID). Lower is better.

They compare two sets of feature vectors (an (n, d) array each, e.g. InceptionV3 pool features, d = 2048); which
network gives the features is the caller's choice. FID follows pytorch-fid's ``calculate_frechet_distance``
(float64, scipy's ``sqrtm``); KID follows torchmetrics / clean-fid (cubic polynomial kernel, unbiased MMD^2 averaged
over random subsets).
"""

from __future__ import annotations

import numpy as np

FID_MIN_SAMPLES = 5000  # below this, FID's small-sample bias is large next to the differences usually reported
SQRTM_OFFSET = 1e-6  # pytorch-fid's eps, added to the diagonals when sqrtm fails


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """The mean (d,) and covariance (d, d) of (n, d) feature vectors, float64 (``np.cov``, n - 1 normalisation)."""
    f = _array(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"expected (n, d) features with n >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), in float64: the Frechet distance of two
    Gaussians. When the square root is not finite (near-singular covariances), pytorch-fid's fallback adds 1e-6 to
    both diagonals; an imaginary part from float error is dropped (an error when it is large)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(_array(mu1)), np.atleast_1d(_array(mu2))
    sigma1, sigma2 = np.atleast_2d(_array(sigma1)), np.atleast_2d(_array(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_OFFSET
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the matrix square root has a large imaginary part ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features1, features2) -> float:
    """The Frechet distance of the two sets' Gaussian fits (``statistics``). When a set has no more vectors than
    dimensions (its covariance is singular, as for a task's test split of a few hundred images against 2048
    features), computed exactly in the vectors' span (``frechet_distance_low_rank``) rather than by ``sqrtm`` of a
    d x d matrix, which is then ill-conditioned and takes minutes at d = 2048; the two agree to sqrtm's 1e-6 offset."""
    f1, f2 = _array(features1), _array(features2)
    if f1.ndim == 2 and f2.ndim == 2 and f1.shape[1] == f2.shape[1] and min(f1.shape[0], f2.shape[0]) <= f1.shape[1]:
        return frechet_distance_low_rank(f1, f2)
    return frechet_distance(*statistics(f1), *statistics(f2))


def frechet_distance_low_rank(features1, features2) -> float:
    """The Frechet distance of the Gaussian fits of two sets of n1 and n2 vectors, through the vectors themselves:
    with A_i the centred vectors of set i divided by sqrt(n_i - 1) (so that sigma_i = A_i^T A_i), the nonzero
    eigenvalues of sigma1 sigma2 are those of (A1 A2^T)(A1 A2^T)^T, so tr (sigma1 sigma2)^(1/2) is the sum of the
    singular values of the n1 x n2 matrix A1 A2^T, and tr sigma_i = ||A_i||^2. Exact, float64, O(n d) memory."""
    f1, f2 = _array(features1), _array(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError(f"expected (n, d) features of one d with n >= 2, got shapes {f1.shape} and {f2.shape}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1 = (f1 - mu1) / np.sqrt(f1.shape[0] - 1)
    a2 = (f2 - mu2) / np.sqrt(f2.shape[0] - 1)
    diff = mu1 - mu2
    cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return float(diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2 * cross)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the kernel of KID (gamma = 1/d, coef 1, degree 3)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 with ``polynomial_kernel`` between two sets of m vectors each: the means of
    k(x, x') and k(y, y') over distinct pairs, minus twice the mean of k(x, y) over all pairs."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(same - 2 * kxy.sum() / (m * m))


def kernel_inception_distance(features1, features2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: the mean and standard deviation (population) of ``mmd2_unbiased`` over ``subsets`` random subsets of
    ``subset_size`` vectors drawn without replacement from each set (capped at the smaller set's size, as clean-fid
    does). Unbiased: near 0, possibly slightly negative, for two samples of one distribution."""
    f1, f2 = _array(features1), _array(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"expected (n, d) features of one d, got shapes {f1.shape} and {f2.shape}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 vectors per set, got {f1.shape[0]} and {f2.shape[0]}")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(f1[rng.choice(f1.shape[0], m, replace=False)], f2[rng.choice(f2.shape[0], m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def fid_warning(n: int, dim: int = 2048) -> str | None:
    """A warning when a set of ``n`` feature vectors of dimension ``dim`` is too small for FID to mean much, else None."""
    if n <= dim:
        return (
            f"FID on {n} images is unreliable: the covariance of {n} feature vectors of dimension {dim} is singular (rank at "
            f"most {n - 1} < {dim}), so its matrix square root is ill-conditioned, and FID is strongly biased upward at small n; "
            f"use at least {max(dim + 1, FID_MIN_SAMPLES)} images, or compare with KID, which is unbiased"
        )
    if n < FID_MIN_SAMPLES:
        return (
            f"FID on {n} images is biased upward (its bias shrinks like 1/n and depends on the model), so values are only "
            f"comparable at the same n; use at least {FID_MIN_SAMPLES} images, or compare with KID, which is unbiased"
        )
    return None
