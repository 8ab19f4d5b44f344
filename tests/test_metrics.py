"""Metric arithmetic without the Inception network: Frechet distance, KID, PSNR, SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cyclemask.errors import ConfigError, InputError
from cyclemask.metrics.fid import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    trace_sqrt_product,
)
from cyclemask.metrics.quality import psnr, ssim


def random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.linspace(1.0, cond, d)) @ q.T


# --- Frechet distance ------------------------------------------------------------------------


def test_frechet_closed_form_for_diagonal_covariances(rng):
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_on_well_conditioned_input(rng):
    import scipy.linalg

    s1, s2 = random_spd(rng, 24), random_spd(rng, 24)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = float(np.real(np.trace(root)))
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_trace_sqrt_on_singular_covariances_matches_the_nuclear_norm(rng):
    """Fewer samples than dimensions (as with small FID sets): tr sqrt(S1 S2) equals the sum of
    singular values of Xc Yc^T / sqrt((n1 - 1)(n2 - 1)), an independent route."""
    d, n1, n2 = 200, 30, 25
    x = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.1
    y = rng.normal(size=(n2, d)) + 0.5
    (_, s1), (_, s2) = feature_stats(x), feature_stats(y)
    xc, yc = x - x.mean(0), y - y.mean(0)
    nuclear = np.linalg.svd(xc @ yc.T / math.sqrt((n1 - 1) * (n2 - 1)), compute_uv=False).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(nuclear, rel=1e-8)


def test_set_against_itself_is_zero_even_when_singular(rng):
    f = rng.normal(size=(20, 256)) * 3.0
    assert abs(fid_from_features(f, f)) < 1e-8 * np.trace(np.cov(f, rowvar=False))


def test_fid_is_symmetric_and_grows_with_a_shift(rng):
    a, b = rng.normal(size=(60, 32)), rng.normal(size=(60, 32))
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-10)
    assert fid_from_features(a, b + 1.0) > fid_from_features(a, b) + 20  # ||shift||^2 = 32


def test_frechet_input_errors(rng):
    mu, s = np.zeros(4), np.eye(4)
    with pytest.raises(InputError, match=r"statistics do not match: means \[4\] / \[3\]"):
        frechet_distance(mu, s, np.zeros(3), np.eye(3))
    with pytest.raises(InputError, match="NaN or infinity"):
        frechet_distance(mu, s * np.nan, mu, s)
    with pytest.raises(InputError, match=r"need at least 2 feature vectors \[N, D\] for statistics; got shape \[1, 4\]"):
        feature_stats(np.zeros((1, 4)))


# --- KID -----------------------------------------------------------------------------------


def naive_mmd2(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_definition(rng):
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 5)) + 0.3
    mean, std = kid_from_features(x, y, num_subsets=3, subset_size=100)
    assert mean == pytest.approx(naive_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set


def test_kid_is_unbiased_where_the_biased_estimate_is_not(rng):
    """Same distribution: the mean over many small subsets is ~0 (the biased V-statistic,
    which keeps the diagonal, would be clearly positive)."""
    d = 16
    a, b = rng.normal(size=(400, d)), rng.normal(size=(400, d))
    mean, std = kid_from_features(a, b, num_subsets=200, subset_size=20, seed=1)
    x, y = a[:20], b[:20]
    k = lambda p, q: (p @ q.T / d + 1.0) ** 3  # noqa: E731
    biased = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert abs(mean) < 3 * std / math.sqrt(200)
    assert biased > 10 * abs(mean)
    shifted, _ = kid_from_features(a, b + 0.5, num_subsets=50, subset_size=20)
    assert shifted > 10 * abs(mean)


def test_kid_errors(rng):
    with pytest.raises(InputError, match="at least 2 images per set; got 1 and 5"):
        kid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(InputError, match=r"same D; got \[3, 4\] and \[3, 5\]"):
        kid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ConfigError, match="num_subsets must be >= 1"):
        kid_from_features(np.zeros((3, 4)), np.zeros((3, 4)), num_subsets=0)


# --- PSNR / SSIM ---------------------------------------------------------------------------


def test_psnr_known_values(rng):
    a = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1
    b = a.copy()
    b[0, 0, 0] ^= 16  # one value off by 16: MSE 256 / 768
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (256 / 768)), abs=1e-9)


def naive_ssim_channel(x, y, c1, c2):
    """Direct definition: Gaussian-weighted local statistics at every pixel of the valid region."""
    r = 5
    g = np.exp(-((np.arange(-r, r + 1)) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    for i in range(r, x.shape[0] - r):
        for j in range(r, x.shape[1] - r):
            px, py = x[i - r:i + r + 1, j - r:j + r + 1], y[i - r:i + r + 1, j - r:j + r + 1]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * px * px).sum() - mx * mx, (w * py * py).sum() - my * my
            cxy = (w * px * py).sum() - mx * my
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return np.mean(vals)


def test_ssim_matches_the_definition(rng):
    a = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = np.mean([naive_ssim_channel(a[..., k].astype(float), b[..., k].astype(float), c1, c2) for k in range(3)])
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_ssim_properties(rng):
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    noisy = lambda s: np.clip(a.astype(int) + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8)  # noqa: E731
    assert 1.0 > ssim(a, noisy(5)) > ssim(a, noisy(30)) > 0
    b = noisy(10)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)


def test_quality_input_errors():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputError, match=r"images differ in size: \[16, 16, 3\] vs \[16, 15, 3\]"):
        psnr(a, a[:, :15])
    with pytest.raises(InputError, match=r"second image: expected uint8 RGB \[H, W, 3\]; got float64"):
        ssim(a, a.astype(float))
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(a[:8, :8], a[:8, :8])


@pytest.mark.parametrize("n1, n2, d", [(20, 30, 64), (40, 50, 8)])  # sample route, covariance route
def test_both_fid_routes_agree(rng, n1, n2, d):
    a = rng.normal(size=(n1, d)) * rng.uniform(0.5, 2.0, d)
    b = rng.normal(size=(n2, d)) + 0.2
    assert fid_from_features(a, b) == pytest.approx(frechet_distance(*feature_stats(a), *feature_stats(b)), rel=1e-9)
