"""The paper's metrics (e4e_jax.evaluation) on hand-made inputs, and `e4e-jax evaluate` end to end against
PyTorch references of the official computations (calc_losses_on_images.py, metrics/LEC.py, pytorch-fid)."""
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from PIL import Image

from e4e_jax import evaluation as ev
from tests.parity import tolerance as _tol, max_err as _err  # noqa: E402


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
    return float(d @ d + np.sum(a1 ** 2) + np.sum(a2 ** 2) - 2 * np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())


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
        _fid_reference(*ev.feature_statistics(g1), *ev.feature_statistics(g2)), rel=1e-9)
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
        np.testing.assert_array_equal(desc[k], level[k // 5, cy[k] - 3:cy[k] + 4, cx[k] - 3:cx[k] + 4])
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
        a.add(x[i:i + 32])
        b.add(y[i:i + 32])
    return ev.swd(a, b)


def test_swd_identical_sets_small_distorted_sets_larger():
    a = _smooth_images(64, 0)
    same = _swd(a, a)
    assert sorted(same) == ["SWDx1e3_16", "SWDx1e3_32", "SWDx1e3_avg"]
    assert _swd(a, a, seeds=(0, 0))["SWDx1e3_avg"] == 0.0  # same patches of the same images
    noisy = [_swd(a, np.clip(a + np.random.default_rng(3).normal(0, s, a.shape), -1, 1))["SWDx1e3_avg"]
             for s in (0.1, 0.3, 0.6)]
    print(f"SWD same images {same['SWDx1e3_avg']:.1f}, with noise 0.1/0.3/0.6: {noisy}")
    assert same["SWDx1e3_avg"] < noisy[0] < noisy[1] < noisy[2]
    assert same["SWDx1e3_avg"] < 0.6 * noisy[2]
    with pytest.raises(ValueError, match="equal size"):
        _swd(a, a[:32])
    with pytest.raises(ValueError, match="at least 16"):
        ev.SWDDescriptors(8)


# ----------------------------------------------------------------------------------- latents and LEC
def test_latent_variation_and_delta_norm_by_hand():
    w = np.zeros((2, 2, 2), np.float32)
    w[0, 1] = [3, 4]                     # layers (0, 0), (3, 4): mean (1.5, 2), each 2.5 away
    w[1] = [[1, 1], [1, 1]]              # a code in W: no variation
    np.testing.assert_allclose(ev.latent_variation(w), [2.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(ev.delta_norm(w), [5.0, 0.0], atol=1e-6)
    w3 = np.array([[[0, 0], [2, 0], [4, 0]]], np.float32)  # mean (2, 0): distances 2, 0, 2
    np.testing.assert_allclose(ev.latent_variation(w3), [4 / 3], atol=1e-6)
    np.testing.assert_allclose(ev.delta_norm(w3), [3.0], atol=1e-6)  # (2 + 4) / 2
    np.testing.assert_allclose(ev.latent_distance(w3, w3 + 1), [math.sqrt(6)], atol=1e-6)


def _toy_pair(k=1.0):
    """G(w) = 2w as a (B, n, D) "image"; E(x) = k·x/2, so E(G(w)) = k·w (exactly w for k = 1)."""
    return (lambda x: k * jnp.asarray(x) / 2), (lambda w: 2 * jnp.asarray(w))


def test_latent_recovery_by_hand():
    w = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    enc, gen = _toy_pair()
    np.testing.assert_allclose(ev.latent_recovery_distances(enc, gen, w), 0, atol=1e-6)
    e = np.float32([0.5, -1, 0, 2, 1])   # E(G(w)) = w + e on every layer: sqrt(n) ||e||
    shifted = lambda x: jnp.asarray(x) / 2 + e
    np.testing.assert_allclose(ev.latent_recovery_distances(shifted, gen, w), 2 * np.linalg.norm(e), rtol=1e-6)
    enc_half, _ = _toy_pair(0.5)          # E(G(w)) = w/2: ||w|| / 2
    np.testing.assert_allclose(ev.latent_recovery_distances(enc_half, gen, w),
                               np.linalg.norm(w.reshape(3, -1), axis=1) / 2, rtol=1e-6)


def test_sample_w():
    rng = jax.random.key(3)
    w = ev.sample_w(lambda z: 2 * z, rng, 4, 5, 3)
    z = jax.random.normal(rng, (4, 5))
    assert w.shape == (4, 3, 5)
    np.testing.assert_allclose(w, np.repeat(2 * np.asarray(z)[:, None], 3, axis=1), rtol=1e-6)
    avg = np.ones(5, np.float32)
    wt = ev.sample_w(lambda z: 2 * z, rng, 4, 5, 3, w_avg=avg, truncation=0.5)
    np.testing.assert_allclose(wt[:, 0], 1 + 0.5 * (2 * np.asarray(z) - 1), rtol=1e-6)


def test_lec_zero_for_consistent_pair_and_by_hand_otherwise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 8)).astype(np.float32)    # toy "images" = 2·codes
    v = rng.normal(size=8).astype(np.float32)
    f, inv = ev.interfacegan_pair(v, 3.0)
    enc, gen = _toy_pair()
    zero = np.asarray(ev.lec_distances(enc, gen, x, f, inv))
    assert zero.shape == (4,) and zero.max() <= 1e-5  # only the rounding of (c + 3v) - 3v
    for k in (0.5, 1.5):                                 # E(G(w)) = k·w: |1 - k| ||c + 3v||, c = E(x)
        enc_k, _ = _toy_pair(k)
        c = k * x / 2
        expected = abs(1 - k) * np.linalg.norm((c + 3 * v).reshape(4, -1), axis=1)
        np.testing.assert_allclose(ev.lec_distances(enc_k, gen, x, f, inv), expected, rtol=1e-5)
    # Per-layer (n, D) InterFaceGAN directions broadcast over the batch.
    vl = rng.normal(size=(3, 8)).astype(np.float32)
    f, inv = ev.interfacegan_pair(vl, -2.0)
    np.testing.assert_allclose(f(x), x - 2 * vl, rtol=1e-6)


def test_ganspace_pair_is_an_invertible_translation_on_chosen_layers():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 6, 8)).astype(np.float32)
    comp = rng.normal(size=8).astype(np.float32)
    f, inv = ev.ganspace_pair(comp, 0.7, 1, 4, -2.0)
    edited = np.asarray(f(w))
    np.testing.assert_allclose(edited[:, 1:4], w[:, 1:4] + (-2.0 * 0.7) * comp, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(edited[:, [0, 4, 5]], w[:, [0, 4, 5]])
    np.testing.assert_allclose(inv(edited), w, atol=1e-6)
    enc, gen = _toy_pair()
    np.testing.assert_allclose(ev.lec_distances(enc, gen, 2 * w, f, inv), 0.0, atol=1e-5)


def test_outlier_filter_and_lec_score():
    values = [1.0] * 150 + [1e6]
    np.testing.assert_array_equal(ev.filter_outliers(values), [1.0] * 150)
    assert ev.lec_score(values) == 1.0
    d = list(range(1, 201))                              # 1st pct (lower) = 2, 99th (higher) = 199
    kept = ev.filter_outliers(d)
    assert kept.min() == 2 and kept.max() == 199 and ev.lec_score(d) == pytest.approx(np.mean(range(2, 200)))
    # Grouped as LEC.py's batches (drop_last): [1.5, 3.5, 5.5], none filtered with 3 values.
    assert ev.lec_score([1, 2, 3, 4, 5, 6, 7], group_size=2) == pytest.approx(3.5)
    with pytest.raises(ValueError, match="fewer than one group"):
        ev.lec_score([1.0], group_size=8)


# ------------------------------------------------------------------------------------ distortion, frame
def test_l2_is_torch_mse_per_image():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32), rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    ref = [float(torch.nn.MSELoss()(torch.from_numpy(x[i:i + 1]), torch.from_numpy(y[i:i + 1]))) for i in range(3)]
    np.testing.assert_allclose(ev.l2_per_image(x, y), ref, rtol=1e-6)


@pytest.mark.parametrize("size,hw", [(1024, (256, 256)), (512, (192, 256)), (64, (256, 256)), (256, (256, 256))])
def test_encoder_frame_is_face_pool_and_cars_crop(size, hw):
    x = np.random.default_rng(size).normal(size=(1, 3, size, size)).astype(np.float32)
    ref = torch.nn.AdaptiveAvgPool2d((256, 256))(torch.from_numpy(x)).numpy()
    if hw == (192, 256):
        ref = ref[:, :, 32:224]
    ours = ev.to_encoder_frame(jnp.asarray(x.transpose(0, 2, 3, 1)), hw)
    assert ours.shape == (1, *hw, 3) and _err(ours, ref.transpose(0, 2, 3, 1)) <= 1e-5
    with pytest.raises(ValueError, match="cars"):
        ev.to_encoder_frame(jnp.zeros((1, 16, 16, 3)), (128, 128))


def test_lpips_per_image_matches_reference(tmp_path):
    from tests.refs.perceptual_refs import LPIPSRef, TorchvisionFeatures, randomize_
    from tools.convert_weights import lpips as lpips_conv

    data = Path(__file__).parent / "data" / "lpips_v0.1"
    tv = randomize_(TorchvisionFeatures("alex"), seed=1)
    torch.save(tv.state_dict(), tmp_path / "alex_backbone.pth")
    ref = LPIPSRef("alex", tv.features)
    heads = torch.load(data / "alex.pth", map_location="cpu", weights_only=True)
    for k in range(5):
        getattr(ref, f"lin{k}").model[1].weight.data.copy_(heads[f"lin{k}.model.1.weight"])
    ref.eval()  # the heads' dropout
    _, variables, _ = lpips_conv.convert([data / "alex.pth", tmp_path / "alex_backbone.pth"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 3, 64, 64)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    with torch.no_grad():  # calc_losses_on_images.py: one image at a time
        r = [float(ref(torch.from_numpy(y[i:i + 1]), torch.from_numpy(x[i:i + 1]))) for i in range(3)]
    ours = ev.lpips_per_image(variables, y.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1), precision="highest")
    assert ours.shape == (3,) and _err(ours, r) <= _tol(r)


# -------------------------------------------------------------------------------------------- report
def test_report_and_table(tmp_path):
    report = {"distortion": {"l2": np.float32(0.0123), "lpips": jnp.float32(0.2)},
              "perception": {"fid": float("nan"), "swd": 12.5},
              "latent": {"variation": np.asarray(1.5), "recovery": None}, "list": (np.int64(3), np.zeros(2))}
    path = ev.write_report(tmp_path / "sub" / "metrics.json", report)
    back = json.loads(path.read_text())
    assert back["distortion"]["l2"] == pytest.approx(0.0123) and back["perception"]["fid"] is None
    assert back["list"] == [3, [0.0, 0.0]] and back["latent"]["variation"] == 1.5
    table = ev.format_table({"e4e": back, "pSp": {"distortion": {"l2": 0.01}}})
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["Method", "L2 ↓", "LPIPS ↓", "FID ↓", "SWD ↓", "LEC ↓",
                                                         "Var(w+)", "E(G(w)) ↓"]
    row = [c.strip() for c in lines[2].split("|")]
    assert row == ["e4e", "0.0123", "0.2000", "—", "12.50", "—", "1.500", "—"]
    assert lines[3].split("|")[0].strip() == "pSp" and len(lines) == 4


# ------------------------------------------------------------------------------- `e4e-jax evaluate`
SIZE, N_STYLES = 16, 6  # tiny generator; the encoder is the official IR-SE50 at 256x256


def _load_png(path, hw=(256, 256)):
    """The official test transform: PIL bilinear resize, ToTensor, Normalize(0.5, 0.5). (3, H, W)."""
    img = Image.open(path).convert("RGB")
    if img.size != hw[::-1]:
        img = img.resize(hw[::-1], Image.BILINEAR)
    return ((np.asarray(img, np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    from e4e_jax.cli import main as cli_main
    from tests.refs import psp_encoders
    from tests.refs.inception_ref import FIDInceptionRef
    from tests.refs.perceptual_refs import LPIPSRef, TorchvisionFeatures, randomize_
    from tests.refs.rosinality_stylegan2 import Generator as TorchGenerator
    from tools.convert_weights.__main__ import main as convert_main

    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    enc = psp_encoders.randomize_(psp_encoders.Encoder4Editing(50, "ir_se", stylegan_size=SIZE), seed=0).eval()
    dec = TorchGenerator(SIZE, 512, n_mlp=2, channel_multiplier=1).randomize_(seed=1).eval()
    latent_avg = (0.5 * torch.randn(512)).repeat(N_STYLES, 1)
    state = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
             **{f"decoder.{k}": v for k, v in dec.state_dict().items()}}
    torch.save({"state_dict": state, "latent_avg": latent_avg,
                "opts": {"encoder_type": "Encoder4Editing", "dataset_type": "ffhq_encode",
                         "start_from_latent_avg": True, "stylegan_size": SIZE}}, tmp / "e4e.pt")
    assert convert_main(["e4e", str(tmp / "e4e.pt"), "--out", str(tmp / "e4e")]) == 0

    tv = randomize_(TorchvisionFeatures("alex"), seed=1)
    torch.save(tv.state_dict(), tmp / "alexnet.pth")
    heads = Path(__file__).parent / "data" / "lpips_v0.1" / "alex.pth"
    assert convert_main(["lpips", str(heads), str(tmp / "alexnet.pth"), "--out", str(tmp / "lpips")]) == 0
    lpips_ref = LPIPSRef("alex", tv.features)
    for k, w in torch.load(heads, map_location="cpu", weights_only=True).items():
        getattr(lpips_ref, k.split(".")[0]).model[1].weight.data.copy_(w)
    lpips_ref.eval()

    inc = FIDInceptionRef().randomize_(seed=2).eval()
    torch.save(inc.state_dict(), tmp / "pt_inception-2015-12-05-6726825d.pth")
    assert convert_main(["inception", str(tmp / "pt_inception-2015-12-05-6726825d.pth"), "--out",
                         str(tmp / "inception")]) == 0

    direction = 0.5 * torch.randn(1, 512)
    torch.save(direction, tmp / "age.pt")
    comp = torch.nn.functional.normalize(torch.randn(4, 1, 512), dim=-1)
    pca = {"mean": torch.randn(1, 512), "comp": comp, "std": 0.5 + torch.rand(4)}
    torch.save(pca, tmp / "ffhq_pca.pt")

    imgs = tmp / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # smooth colour fields plus noise: something an image-like metric can see
        base = rng.uniform(0, 255, (1, 1, 3)) * np.linspace(0.3, 1, 256)[:, None, None]
        Image.fromarray(np.clip(base + rng.normal(0, 20, (256, 256, 3)), 0, 255).astype(np.uint8)).save(
            imgs / f"img{i}.png")
    (imgs / "broken.png").write_text("not an image")

    out = tmp / "metrics"
    rc = cli_main(["evaluate", "--model", str(tmp / "e4e"), "--images", str(imgs), "--output", str(out),
                   "--lpips", str(tmp / "lpips"), "--inception", str(tmp / "inception"),
                   "--directions", str(tmp / "age.pt"), "--ganspace", str(tmp / "ffhq_pca.pt"),
                   "--ganspace-edit", "1,0,3,2", "--num-samples", "2", "--batch-size", "2"])
    return dict(tmp=tmp, enc=enc, dec=dec, latent_avg=latent_avg, lpips_ref=lpips_ref, inc=inc,
                direction=direction, pca=pca, imgs=imgs, rc=rc, report=json.loads((out / "metrics.json").read_text()),
                cli=cli_main)


def _torch_pipeline(e2e, names):
    """x, E(x) (latent_avg added), and the 256x256-pooled reconstruction, as the official code computes them."""
    x = torch.from_numpy(np.stack([_load_png(e2e["imgs"] / n) for n in names]))
    pool = torch.nn.AdaptiveAvgPool2d((256, 256))

    def encode(im):
        return e2e["enc"](im) + e2e["latent_avg"].repeat(im.shape[0], 1, 1)

    def generate(w):
        return pool(e2e["dec"]([w], input_is_latent=True, randomize_noise=False)[0])

    with torch.no_grad():
        codes = encode(x)
        return x, codes, generate(codes), encode, generate


def test_evaluate_cli_matches_official_computations(e2e):
    rep, names = e2e["report"], ["img0.png", "img1.png"]
    assert e2e["rc"] == 3, "a skipped file (broken.png) must give exit status 3"
    assert rep["n_images"] == 2 and [Path(s["file"]).name for s in rep["skipped"]] == ["broken.png"]
    x, codes, recon, encode, generate = _torch_pipeline(e2e, names)

    per = rep["distortion"]["per_image"]
    l2 = [float(torch.nn.MSELoss()(recon[i:i + 1], x[i:i + 1])) for i in range(2)]
    with torch.no_grad():
        lp = [float(e2e["lpips_ref"](recon[i:i + 1], x[i:i + 1])) for i in range(2)]
    ours_l2, ours_lp = [per[n]["l2"] for n in names], [per[n]["lpips"] for n in names]
    print(f"L2 max err {_err(ours_l2, l2):.2e} (|ref| {max(l2):.3f}); LPIPS max err {_err(ours_lp, lp):.2e} "
          f"(|ref| {max(lp):.3f})")
    assert _err(ours_l2, l2) <= _tol(l2) and _err(ours_lp, lp) <= _tol(lp)
    assert rep["distortion"]["l2"] == pytest.approx(np.mean(l2), rel=1e-4)
    assert rep["distortion"]["lpips"] == pytest.approx(np.mean(lp), rel=1e-4)

    w = codes.numpy()
    var = np.mean(np.linalg.norm(w - w.mean(1, keepdims=True), axis=-1), axis=1).mean()
    assert rep["latent"]["variation"] == pytest.approx(var, rel=1e-4)

    # metrics/LEC.py: ||codes - f^{-1}(E(G(f(codes))))||, norm over (n, 512); 2 values: none filtered.
    pca, d = e2e["pca"], e2e["direction"]
    gs = torch.zeros(1, N_STYLES, 512)
    gs[:, 0:3] = 2 * pca["std"][1] * pca["comp"][1]
    edits = {"age x3": (lambda c: c + 3 * d, lambda c: c - 3 * d),
             "ganspace pc1 0:3 2": (lambda c: c + gs, lambda c: c - gs)}
    for name, (f, inv) in edits.items():
        with torch.no_grad():
            dist = (codes - inv(encode(generate(f(codes))))).norm(2, dim=(1, 2)).numpy()
        ours = rep["editability"]["edits"][name]["lec"]
        print(f"LEC {name}: ours {ours:.5f} ref {dist.mean():.5f}")
        assert abs(ours - dist.mean()) <= _tol(dist.mean()) and dist.mean() > 0.1
    assert rep["editability"]["lec"] == pytest.approx(np.mean([v["lec"] for v in rep["editability"]["edits"].values()]))

    # FID of the reference Inception's pool3 features of the same images (2 < 2048: exact nuclear-norm form).
    with torch.no_grad():
        fr, ff = e2e["inc"]((x + 1) / 2)[0].numpy(), e2e["inc"]((recon + 1) / 2)[0].numpy()
    fid = _nuclear_fid(fr.astype(np.float64), ff.astype(np.float64))
    print(f"FID ours {rep['perception']['fid']:.4f} ref {fid:.4f}")
    assert rep["perception"]["fid"] == pytest.approx(fid, rel=1e-4)
    assert "fid_sample_size" in rep["notes"]

    swd = rep["perception"]["swd_per_resolution"]
    assert sorted(swd) == sorted([f"SWDx1e3_{r}" for r in (256, 128, 64, 32, 16)] + ["SWDx1e3_avg"])
    assert rep["perception"]["swd"] == swd["SWDx1e3_avg"] > 0
    assert rep["latent"]["recovery_samples"] == 2 and math.isfinite(rep["latent"]["recovery"])
    assert rep["latent"]["recovery"] > 0


def test_evaluate_cli_on_invert_output(e2e, tmp_path, capsys):
    cli, tmp = e2e["cli"], e2e["tmp"]
    inv = tmp_path / "inv"
    assert cli(["invert", "--model", str(tmp / "e4e"), "--images", str(e2e["imgs"]), "--output", str(inv),
                "--batch-size", "2"]) == 3
    out = tmp_path / "metrics"
    rc = cli(["evaluate", "--model", str(tmp / "e4e"), "--inversions", str(inv), "--images", str(e2e["imgs"]),
              "--output", str(out), "--num-samples", "0", "--name", "e4e-tiny"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "e4e-tiny" in printed
    assert "FID needs Inception weights: convert pt_inception-2015-12-05-6726825d.pth" in printed
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["n_images"] == 2 and "fid" not in rep["perception"] and "lpips" in rep["notes"]
    # calc_losses_on_images.py: the saved inversion and the original, both through the test transform.
    pngs = sorted((inv / "inversions").glob("*.png"))
    assert len(pngs) == 2
    for png, name in zip(pngs, ["img0.png", "img1.png"]):
        ref = float(np.mean((_load_png(png) - _load_png(e2e["imgs"] / name)) ** 2))
        assert rep["distortion"]["per_image"][name]["l2"] == pytest.approx(ref, rel=1e-5)
    w = np.load(inv / "latents.npy")
    var = np.mean(np.linalg.norm(w - w.mean(1, keepdims=True), axis=-1), axis=1).mean()
    assert rep["latent"]["variation"] == pytest.approx(var, rel=1e-5)


def test_evaluate_cli_errors(e2e, tmp_path, capsys):
    cli, tmp = e2e["cli"], e2e["tmp"]
    base = ["evaluate", "--model", str(tmp / "e4e"), "--output", str(tmp_path / "o")]
    assert cli(base) == 2 and "--images" in capsys.readouterr().err
    assert cli(base + ["--images", str(e2e["imgs"]), "--inception", str(tmp / "lpips")]) == 2
    assert "'inception' bundle" in capsys.readouterr().err
    assert cli(base + ["--images", str(e2e["imgs"]), "--ganspace-edit", "0,0,3,1"]) == 2
    assert "--ganspace" in capsys.readouterr().err
    assert cli(base + ["--inversions", str(tmp_path)]) == 2
    assert "files.txt is missing" in capsys.readouterr().err
    torch.save(torch.zeros(1, N_STYLES + 1, 512), tmp_path / "pose.pt")
    assert cli(base + ["--images", str(e2e["imgs"]), "--directions", str(tmp_path / "pose.pt")]) == 2
    assert "pose.pt: direction of shape (7, 512)" in capsys.readouterr().err
