"""Pivotal tuning (e4e_jax/inference/tuning.py) on the quickstart-size generator and the real sample photos: photos
tuned together equal photos tuned one at a time, a photo under the LPIPS threshold stops changing, tuning
lowers each photo's LPIPS, and the locality regulariser keeps the images of random latents closer to the
base generator's. Also the regulariser's geometry and the delta bundles."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.data import folder
from e4e_jax.inference import tuning
from e4e_jax.models.lpips import LPIPS
from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config, init_variables
from e4e_jax.storage import bundle, pti_bundle
from e4e_jax.training.networks import random_loss_network
from tests.assets import require

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

# The quickstart's generator (configs/tiny.py): 32x32, the smallest size AlexNet's LPIPS takes.
GEN = StyleGAN2Config(size=32, channels=(64, 64, 32, 16), n_mlp=2)
STEPS = 20
N_RANDOM = 8  # random latents the locality check renders


def _tune(setup, cfg, order, valid):
    """Tune the photos `order` (indices into the setup's photos) in one batch; rows not `valid` are padding."""
    order = np.asarray(order)
    state = tuning.init_state(cfg, setup["var"]["params"]["synthesis"], jnp.asarray(valid))
    run = setup["runners"][cfg.locality]
    args = (setup["var"], setup["lv"], setup["pivots"][order], setup["targets"][order], jnp.asarray(order))
    state, ran = tuning.tune(run, state, *args, cfg.max_steps)
    assert ran <= cfg.max_steps
    return jax.device_get(state)


@pytest.fixture(scope="module")
def setup():
    photos = sorted(require("images").glob("*.jpg"))[:3]
    var = init_variables(GEN, jax.random.key(0))
    gen, lpips = Generator(GEN), LPIPS()
    w = gen.apply(var, jax.random.normal(jax.random.key(5), (3, GEN.mapping_in_dim)), method=Generator.map)
    pivots = jnp.repeat(w[:, None], GEN.n_latent, axis=1)
    targets = np.stack([folder.load_image(p, (GEN.size, GEN.size)) for p in photos])
    # Photo 2's target is its own pivot's image: LPIPS 0 <= the threshold before the first step.
    targets[2] = np.asarray(gen.apply(var, pivots[2:3], method=Generator.synthesize))[0]
    cfg = tuning.PTIConfig(max_steps=STEPS)
    s = {"var": var, "gen": gen, "lpips": lpips, "lv": random_loss_network("lpips", 1), "cfg": cfg}
    s.update(pivots=pivots, targets=jnp.asarray(targets))
    s["runners"] = {
        flag: tuning.make_runner(gen, lpips, dataclasses.replace(cfg, locality=flag)) for flag in (False, True)
    }
    s["together"] = _tune(s, cfg, [0, 1, 2], [True] * 3)
    return s


def _leaf_max(tree_a, tree_b, fn) -> float:
    return max(float(x) for x in jax.tree.leaves(jax.tree.map(fn, tree_a, tree_b)))


def test_photos_tuned_together_equal_photos_tuned_alone(setup):
    """Each photo alone (the other rows padding) gets what it gets in the full batch: the same steps and
    the same parameters up to float round-off (far below what tuning moved them)."""
    together, base = setup["together"], setup["var"]["params"]["synthesis"]
    for i in range(3):
        alone = _tune(setup, setup["cfg"], [i, i, i], [True, False, False])
        assert int(alone.steps[0]) == int(together.steps[i])
        assert alone.steps[1:].tolist() == [0, 0]  # padding rows never move
        moved = _leaf_max(together.synthesis, base, lambda t, b: jnp.abs(t[i] - b).max())
        diff = _leaf_max(together.synthesis, alone.synthesis, lambda t, a: jnp.abs(t[i] - a[0]).max())
        if i < 2:
            assert moved > 0.5 * setup["cfg"].learning_rate
        assert diff <= 1e-2 * moved, (i, diff, moved)


def test_a_photo_under_the_threshold_stops_before_its_first_step(setup):
    together, base = setup["together"], setup["var"]["params"]["synthesis"]
    assert together.steps.tolist() == [STEPS, STEPS, 0]
    assert _leaf_max(together.synthesis, base, lambda t, b: jnp.abs(t[2] - b).max()) == 0.0


def test_tuning_lowers_each_photos_lpips(setup):
    render = tuning.per_photo_renderer(setup["gen"])
    syn = setup["together"].synthesis
    base = jax.tree.map(lambda b: jnp.broadcast_to(b, (3, *b.shape)), setup["var"]["params"]["synthesis"])
    ws = setup["pivots"][:, None]
    before = render(setup["var"], base, ws, jax.random.key(0))[:, 0]
    after = render(setup["var"], syn, ws, jax.random.key(0))[:, 0]
    l2_b, lp_b = tuning.photo_distances(setup["lpips"], setup["lv"], before, setup["targets"])
    l2_a, lp_a = tuning.photo_distances(setup["lpips"], setup["lv"], after, setup["targets"])
    assert np.all(np.asarray(lp_a[:2]) < 0.95 * np.asarray(lp_b[:2])), (lp_b, lp_a)
    assert np.all(np.asarray(l2_a[:2]) < np.asarray(l2_b[:2])), (l2_b, l2_a)


def test_locality_keeps_random_latents_closer_to_the_base_generator(setup):
    """The regulariser's purpose (PTI Sec. 3.3): away from the pivot the tuned generator stays the base."""
    gen, var = setup["gen"], setup["var"]
    cfg = dataclasses.replace(setup["cfg"], locality=True)
    with_reg = _tune(setup, cfg, [0, 1, 2], [True] * 3)
    w = gen.apply(var, jax.random.normal(jax.random.key(99), (N_RANDOM, GEN.mapping_in_dim)), method=Generator.map)
    ws = jnp.broadcast_to(jnp.repeat(w[:, None], GEN.n_latent, axis=1), (3, N_RANDOM, GEN.n_latent, GEN.style_dim))
    base_images = gen.apply(var, ws[0], method=Generator.synthesize)
    render = tuning.per_photo_renderer(gen)

    def drift(state) -> list[float]:  # mean LPIPS of each tuned photo's generator from the base's images
        imgs = render(var, state.synthesis, ws, jax.random.key(0))[:2]
        return [float(jnp.mean(setup["lpips"].apply(setup["lv"], x, base_images))) for x in imgs]

    free, held = drift(setup["together"]), drift(with_reg)
    assert all(h < 0.8 * f for h, f in zip(held, free)), (held, free)


def test_locality_latents_lie_at_alpha_from_the_pivot(setup):
    gen, var = setup["gen"], setup["var"]
    cfg = dataclasses.replace(setup["cfg"], locality_samples=4)
    pivot = setup["pivots"][0]
    ws = tuning.locality_latents(gen, var, pivot, jax.random.key(3), cfg)
    assert ws.shape == (4, GEN.n_latent, GEN.style_dim)
    d = np.asarray(ws - pivot[None]).reshape(4, -1)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), cfg.locality_alpha, rtol=1e-5)
    # Along (truncated w - pivot), truncation psi 0.5 towards w_avg, the same w on every layer.
    z = jax.random.normal(jax.random.key(3), (4, GEN.mapping_in_dim))
    w = np.asarray(gen.apply(var, z, method=Generator.map))
    w_avg = np.asarray(var["buffers"]["w_avg"])
    toward = (w_avg + 0.5 * (w - w_avg))[:, None] - np.asarray(pivot)[None]
    cos = np.sum(d * toward.reshape(4, -1), axis=1) / (
        np.linalg.norm(d, axis=1) * np.linalg.norm(toward.reshape(4, -1), axis=1)
    )
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_delta_bundle_round_trip_and_its_base(setup, tmp_path):
    base = setup["var"]["params"]["synthesis"]
    tuned = jax.tree.map(lambda t: t[0], setup["together"].synthesis)
    delta = jax.device_get(tuning.delta(tuned, base))
    fp = pti_bundle.synthesis_fingerprint(base)
    pti_bundle.save(tmp_path / "d", GEN, fp, delta)
    config, loaded = pti_bundle.load(tmp_path / "d", fp)
    assert config["kind"] == "stylegan2_delta" and config["architecture"]["dtype"] == "bfloat16"
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), loaded, delta))
    restored = tuning.apply_delta(base, loaded)
    # bfloat16 keeps 8 significant bits of each change: the tuned weights come back to that precision.
    err = _leaf_max(restored, tuned, lambda r, t: jnp.abs(r - t).max())
    moved = _leaf_max(tuned, base, lambda t, b: jnp.abs(t - b).max())
    assert 0 < err <= 2.0**-8 * moved
    nan = jax.tree.map(lambda d: np.where(np.arange(d.size).reshape(d.shape) == 0, np.nan, d).astype(d.dtype), delta)
    with pytest.raises(bundle.BundleError, match="NaN"):  # bfloat16 is checked like float32
        pti_bundle.save(tmp_path / "nan", GEN, fp, nan)
    assert not (tmp_path / "nan").exists()
    other = jax.tree.map(lambda b: b + 1.0, base)
    with pytest.raises(bundle.BundleError, match="tuned from another generator"):
        pti_bundle.load(tmp_path / "d", pti_bundle.synthesis_fingerprint(other))
