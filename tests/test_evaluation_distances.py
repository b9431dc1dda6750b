"""FID and SWD of e4e_jax.metrics.definitions against scipy, pytorch-fid's computation and ProGAN's Laplacian pyramid."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage

from e4e_jax.metrics import definitions as ev
from tests.parity import max_err as _err  # noqa: E402


# ------------------------------------------------------------------------------------------------ FID
def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fid_reference(mu1, s1, mu2, s2):
    """Tr (S1 S2)^{1/2} from the eigenvalues of the product (real, >= 0 for PSD S1, S2)."""
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_closed_forms(method):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # Commuting (diagonal) covariances: sum (sqrt a - sqrt b)^2.
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    exact = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert abs(ev.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method) - exact) <= 1e-10 * max(1, exact)
    # Equal covariances: only the means count.
    s = _spd(rng, 6)
    assert abs(ev.frechet_distance(mu1, s, mu2, s, method) - np.sum((mu1 - mu2) ** 2)) <= 1e-9
    # General covariances.
    s1, s2 = _spd(rng, 6), _spd(rng, 6)
    ref = _fid_reference(mu1, s1, mu2, s2)
    assert abs(ev.frechet_distance(mu1, s1, mu2, s2, method) - ref) <= 1e-9 * max(1, abs(ref))


def test_fid_of_gaussian_features():
    """Features N(0, I) vs N(mu, I): FID -> ||mu||^2 as N grows."""
    rng = np.random.default_rng(1)
    mu = np.array([1.0, -1.5, 0.5, 1.0])
    f1, f2 = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) + mu
    fid = ev.fid_from_features(f1, f2)
    assert abs(fid - mu @ mu) < 0.05, fid
    # pytorch-fid's computation on the same features (np.cov, scipy sqrtm), written out here.
    m1, m2, c1, c2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    pt = (m1 - m2) @ (m1 - m2) + np.trace(c1 + c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real)
    assert abs(fid - pt) <= 1e-9 * pt


def _nuclear_fid(f1, f2):
    """Exact FID for N <= D: with S = AᵀA (A = centred features / sqrt(N - 1)), Tr (S1 S2)^{1/2} is the sum of
    the singular values of A1 A2ᵀ."""
    a1 = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    a2 = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    d = f1.mean(0) - f2.mean(0)
    return float(d @ d + np.sum(a1**2) + np.sum(a2**2) - 2 * np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())


def test_fid_rank_deficient_features():
    """N < D (few images, 2048-d features): the exact nuclear-norm value, and both square-root methods near it."""
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(10, 32)), 1.3 * rng.normal(size=(12, 32)) + 0.5
    exact = _nuclear_fid(f1, f2)
    m1, s1 = ev.feature_statistics(f1)
    m2, s2 = ev.feature_statistics(f2)
    assert abs(_fid_reference(m1, s1, m2, s2) - exact) <= 1e-6 * exact  # eigenvalue form agrees
    assert abs(ev.fid_from_features(f1, f2) - exact) <= 1e-12 * exact
    for method in ("sqrtm", "eigh"):
        fid = ev.frechet_distance(m1, s1, m2, s2, method)
        print(f"rank-deficient FID {method}: rel err {abs(fid - exact) / exact:.1e}")
        assert abs(fid - exact) <= 1e-6 * exact
    # N > D goes through the (D, D) statistics.
    g1, g2 = rng.normal(size=(40, 8)), rng.normal(size=(50, 8)) + 0.3
    assert ev.fid_from_features(g1, g2) == pytest.approx(
        _fid_reference(*ev.feature_statistics(g1), *ev.feature_statistics(g2)), rel=1e-9
    )
    with pytest.raises(ValueError, match="do not match"):
        ev.frechet_distance(m1, s1, m2[:5], s2[:5, :5])
    with pytest.raises(ValueError, match="N >= 2"):
        ev.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="method"):
        ev.trace_sqrt_product(s1, s2, "svd")


# ------------------------------------------------------------------------------------------------ SWD
_G5 = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256


def _pyramid_reference(x_nchw, levels):
    """ProGAN's Laplacian pyramid: scipy.ndimage.convolve with the 5x5 binomial, mode 'mirror' (NCHW)."""
    k = _G5[None, None]
    down = lambda m: scipy.ndimage.convolve(m, k, mode="mirror")[:, :, ::2, ::2]

    def up(m):
        r = np.zeros(m.shape[:2] + (2 * m.shape[2], 2 * m.shape[3]), m.dtype)
        r[:, :, ::2, ::2] = m
        return scipy.ndimage.convolve(r, k * 4, mode="mirror")

    pyr = [np.float32(x_nchw)]
    for _ in range(1, levels):
        pyr.append(down(pyr[-1]))
        pyr[-2] = pyr[-2] - up(pyr[-1])
    return pyr


def test_laplacian_pyramid_matches_scipy_and_reconstructs():
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype(np.float32)
    ours = ev.laplacian_pyramid(jnp.asarray(x), 3)
    ref = _pyramid_reference(x.transpose(0, 3, 1, 2), 3)
    for o, r in zip(ours, ref):
        assert o.shape == r.transpose(0, 2, 3, 1).shape and _err(o, r.transpose(0, 2, 3, 1)) <= 1e-3
    rec = ours[-1]
    for level in ours[-2::-1]:
        rec = ev.pyr_up(rec) + level
    assert _err(rec, x) <= 1e-3


def test_patch_descriptors_and_normalisation():
    level = np.random.default_rng(0).normal(size=(3, 20, 24, 3)).astype(np.float32)
    desc = ev.patch_descriptors(level, np.random.default_rng(7), nhood_size=7, per_image=5)
    assert desc.shape == (15, 7, 7, 3)
    rng = np.random.default_rng(7)  # same draws: x centres, then y centres, in [3, size - 3)
    cx, cy = rng.integers(3, 24 - 3, 15), rng.integers(3, 20 - 3, 15)
    for k in range(15):
        np.testing.assert_array_equal(desc[k], level[k // 5, cy[k] - 3 : cy[k] + 4, cx[k] - 3 : cx[k] + 4])
    flat = ev.normalize_descriptors(desc)
    assert flat.shape == (15, 147)
    per_channel = flat.reshape(15, 7, 7, 3)
    np.testing.assert_allclose(per_channel.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_sliced_wasserstein_of_a_translation():
    a = np.random.default_rng(0).normal(size=(500, 1)).astype(np.float32)
    # One dimension: every unit direction is +-1, so SW = |shift| exactly.
    assert abs(ev.sliced_wasserstein(a, a + 0.25, np.random.default_rng(1)) - 0.25) <= 1e-6
    with pytest.raises(ValueError, match="equal shape"):
        ev.sliced_wasserstein(a, a[:10], np.random.default_rng(1))


def _smooth_images(n, seed, hw=32):
    x = np.random.default_rng(seed).normal(size=(n, hw, hw, 3)).astype(np.float32)
    return np.tanh(3 * np.asarray(ev._filter_mirror(jnp.asarray(x), np.float32([1, 4, 6, 4, 1]) / 16)))


def _swd(x, y, seeds=(0, 1)):
    a, b = ev.SWDDescriptors(x.shape[1], seeds[0]), ev.SWDDescriptors(y.shape[1], seeds[1])
    for i in range(0, len(x), 32):  # batch by batch, as the CLI feeds it
        a.add(x[i : i + 32])
        b.add(y[i : i + 32])
    return ev.swd(a, b)


def test_swd_identical_sets_small_distorted_sets_larger():
    a = _smooth_images(64, 0)
    same = _swd(a, a)
    assert sorted(same) == ["SWDx1e3_16", "SWDx1e3_32", "SWDx1e3_avg"]
    assert _swd(a, a, seeds=(0, 0))["SWDx1e3_avg"] == 0.0  # same patches of the same images
    noisy = [
        _swd(a, np.clip(a + np.random.default_rng(3).normal(0, s, a.shape), -1, 1))["SWDx1e3_avg"]
        for s in (0.1, 0.3, 0.6)
    ]
    print(f"SWD same images {same['SWDx1e3_avg']:.1f}, with noise 0.1/0.3/0.6: {noisy}")
    assert same["SWDx1e3_avg"] < noisy[0] < noisy[1] < noisy[2]
    assert same["SWDx1e3_avg"] < 0.6 * noisy[2]
    with pytest.raises(ValueError, match="equal size"):
        _swd(a, a[:32])
    with pytest.raises(ValueError, match="at least 16"):
        ev.SWDDescriptors(8)
