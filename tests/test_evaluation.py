"""The paper's metrics (e4e_jax.metrics.definitions) on hand-made inputs: latents, LEC, distortion, encoder frame, report."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.metrics import definitions as ev
from e4e_jax.metrics import evaluator
from tests.parity import max_err as _err
from tests.parity import tolerance as _tol  # noqa: E402


# ----------------------------------------------------------------------------------- latents and LEC
def test_latent_variation_and_delta_norm_by_hand():
    w = np.zeros((2, 2, 2), np.float32)
    w[0, 1] = [3, 4]  # layers (0, 0), (3, 4): mean (1.5, 2), each 2.5 away
    w[1] = [[1, 1], [1, 1]]  # a code in W: no variation
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
    e = np.float32([0.5, -1, 0, 2, 1])  # E(G(w)) = w + e on every layer: sqrt(n) ||e||
    shifted = lambda x: jnp.asarray(x) / 2 + e
    np.testing.assert_allclose(ev.latent_recovery_distances(shifted, gen, w), 2 * np.linalg.norm(e), rtol=1e-6)
    enc_half, _ = _toy_pair(0.5)  # E(G(w)) = w/2: ||w|| / 2
    np.testing.assert_allclose(
        ev.latent_recovery_distances(enc_half, gen, w), np.linalg.norm(w.reshape(3, -1), axis=1) / 2, rtol=1e-6
    )


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
    x = rng.normal(size=(4, 3, 8)).astype(np.float32)  # toy "images" = 2·codes
    v = rng.normal(size=8).astype(np.float32)
    f, inv = ev.interfacegan_pair(v, 3.0)
    enc, gen = _toy_pair()
    zero = np.asarray(ev.lec_distances(enc, gen, x, f, inv))
    assert zero.shape == (4,) and zero.max() <= 1e-5  # only the rounding of (c + 3v) - 3v
    for k in (0.5, 1.5):  # E(G(w)) = k·w: |1 - k| ||c + 3v||, c = E(x)
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
    d = list(range(1, 201))  # 1st pct (lower) = 2, 99th (higher) = 199
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
    ref = [float(torch.nn.MSELoss()(torch.from_numpy(x[i : i + 1]), torch.from_numpy(y[i : i + 1]))) for i in range(3)]
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
        ev.to_encoder_frame(jnp.zeros((1, 16, 16, 3)), (128, 96))


def test_encoder_frame_of_a_small_square_input_is_the_pool_to_it():
    """configs/tiny.py's 32x32 encoder: the frame its training used (output_size = the input)."""
    x = np.random.default_rng(1).normal(size=(1, 3, 64, 64)).astype(np.float32)
    ref = torch.nn.AdaptiveAvgPool2d((32, 32))(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    assert _err(ev.to_encoder_frame(jnp.asarray(x.transpose(0, 2, 3, 1)), (32, 32)), ref) <= 1e-5


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
        r = [float(ref(torch.from_numpy(y[i : i + 1]), torch.from_numpy(x[i : i + 1]))) for i in range(3)]
    ours = ev.lpips_per_image(variables, y.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1), precision="highest")
    assert ours.shape == (3,) and _err(ours, r) <= _tol(r)


# -------------------------------------------------------------------------------------------- report
def test_report_and_table(tmp_path):
    report = {
        "distortion": {"l2": np.float32(0.0123), "lpips": jnp.float32(0.2)},
        "perception": {"fid": float("nan"), "swd": 12.5},
        "latent": {"variation": np.asarray(1.5), "recovery": None},
        "list": (np.int64(3), np.zeros(2)),
    }
    path = evaluator.write_report(tmp_path / "sub" / "metrics.json", report)
    back = json.loads(path.read_text())
    assert back["distortion"]["l2"] == pytest.approx(0.0123) and back["perception"]["fid"] is None
    assert back["list"] == [3, [0.0, 0.0]] and back["latent"]["variation"] == 1.5
    table = evaluator.format_table({"e4e": back, "pSp": {"distortion": {"l2": 0.01}}})
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == [
        "Method",
        "L2 ↓",
        "LPIPS ↓",
        "FID ↓",
        "SWD ↓",
        "LEC ↓",
        "Var(w+)",
        "E(G(w)) ↓",
    ]
    row = [c.strip() for c in lines[2].split("|")]
    assert row == ["e4e", "0.0123", "0.2000", "—", "12.50", "—", "1.500", "—"]
    assert lines[3].split("|")[0].strip() == "pSp" and len(lines) == 4
