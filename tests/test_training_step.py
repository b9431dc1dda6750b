"""The jitted train step: same numbers on 1 and 8 devices (global BatchNorm statistics), the official
double BatchNorm update, and the discriminator's lazy R1 schedule."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.training_helpers import ONE_VS_MANY_RTOL

ROOT = Path(__file__).resolve().parents[1]


def _setup(config):
    from e4e_jax.training import networks, optim
    from e4e_jax.training.state import init_train_state
    from tests import training_helpers  # noqa: F401  (registers the small encoder)

    run = networks.build(config)
    enc_tx = optim.encoder_optimizer(config.optim_name, config.learning_rate)
    disc_tx = optim.discriminator_optimizer(config.w_discriminator_lr)
    h, w = config.data.image_size
    state = jax.jit(
        lambda: init_train_state(
            encoder=run.nets.encoder,
            discriminator=run.nets.discriminator,
            encoder_tx=enc_tx,
            disc_tx=disc_tx,
            optim_name=config.optim_name,
            seed=0,
            input_shape=(1, h, w, 3),
            style_dim=512,
            pool_size=config.w_pool_size,
        )
    )()
    return run, enc_tx, disc_tx, state


def _worker_one_vs_many() -> dict:
    """Runs in a subprocess with 8 host devices: 3 steps on a 1-device mesh and on an 8-device mesh."""
    from e4e_jax import sharding
    from e4e_jax.training.step import train_step
    from tests.training_helpers import small_config, worst_relative_difference

    assert jax.device_count() == 8, jax.devices()
    config = small_config(batch_size=8)
    run, enc_tx, disc_tx, state0 = _setup(config)
    host_state = jax.device_get(state0)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, size=(8, 8, 8, 3)).astype(np.float32) for _ in range(3)]
    results = {}
    for n in (1, 8):
        mesh = sharding.data_mesh(jax.devices()[:n])
        repl, bsh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
        fn = jax.jit(
            functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx),
            in_shardings=(repl, repl, bsh),
            out_shardings=(repl, repl),
            donate_argnums=(0,),
        )
        state = jax.device_put(host_state, repl)
        frozen = jax.device_put(run.frozen, repl)
        for b in batches:
            state, metrics = fn(state, frozen, {"image": jax.device_put(b, bsh)})
        assert len(state.encoder_batch_stats and jax.tree.leaves(state.encoder_batch_stats)[0].devices()) == n
        results[n] = (jax.device_get(state), jax.device_get(metrics))
    (s1, m1), (s8, m8) = results[1], results[8]
    worst, worst_leaf = worst_relative_difference(s1, s8)
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(s1)[0]]
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(host_state.encoder_params), jax.tree.leaves(s1.encoder_params))
    )
    return {
        "worst": worst,
        "worst_leaf": worst_leaf,
        "leaves": len(names),
        "moved": moved,
        "step": int(s8.step),
        "loss1": float(m1["loss"]),
        "loss8": float(m8["loss"]),
        "stats_changed": float(
            np.max(
                np.abs(
                    np.asarray(jax.tree.leaves(s1.encoder_batch_stats)[0])
                    - np.asarray(jax.tree.leaves(host_state.encoder_batch_stats)[0])
                )
            )
        ),
    }


def test_same_update_on_one_and_eight_devices():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.test_training_step", "one_vs_many"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["step"] == 3 and r["leaves"] > 20
    assert r["moved"] > 1e-4 and r["stats_changed"] > 1e-4  # the comparison is not between untouched states
    # BatchNorm uses global-batch statistics: with per-device statistics (one sample per device here) the
    # encoder's outputs, and everything after them, would differ by orders of magnitude more.
    assert r["worst"] <= ONE_VS_MANY_RTOL, r
    assert abs(r["loss1"] - r["loss8"]) <= ONE_VS_MANY_RTOL * max(1.0, abs(r["loss1"]))


@pytest.fixture(scope="module")
def setup():
    from tests.training_helpers import small_config

    config = small_config(batch_size=4)
    return (config,) + _setup(config)


def test_double_batchnorm_update_and_lazy_r1(setup):
    """With the discriminator on, running statistics equal two official train-mode passes; the D optimizer
    takes two Adam steps (loss, then R1) on steps with step % d_reg_every == 0 and one otherwise."""
    from e4e_jax.training import optim
    from e4e_jax.training.step import train_step

    config, run, enc_tx, disc_tx, state = setup
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(4, 8, 8, 3)).astype(np.float32))
    fn = jax.jit(functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx))
    enc = run.nets.encoder
    params = optim.fast_params(state.encoder_params)

    def train_mode_pass(stats):
        _, upd = enc.apply({"params": params, "batch_stats": stats}, x, 0, train=True, mutable=["batch_stats"])
        return upd["batch_stats"]

    want = train_mode_pass(train_mode_pass(state.encoder_batch_stats))
    s1, m1 = fn(state, run.frozen, {"image": x})
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(s1.encoder_batch_stats)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    once = train_mode_pass(state.encoder_batch_stats)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(want))) > 1e-4

    def adam_count(s):
        return int(s.disc_opt_state[0].count)

    assert config.d_reg_every == 2
    assert adam_count(s1) == 2 and float(m1["discriminator_r1_applied"]) == 1.0  # step 0: regularised
    assert float(m1["discriminator_r1_loss"]) > 0
    s2, m2 = fn(s1, run.frozen, {"image": x})
    assert adam_count(s2) == 3 and float(m2["discriminator_r1_applied"]) == 0.0
    s3, _ = fn(s2, run.frozen, {"image": x})
    assert adam_count(s3) == 5
    assert int(s3.fake_pool.count) == 4 and int(s3.real_pool.count) == 4  # pools filled (size 4)
    assert int(s3.encoder_opt_state.steps_since_sync) == 3  # Lookahead state advances once per step


def test_progressive_stage_and_losses_follow_the_step(setup):
    from e4e_jax.training.step import train_step

    config, run, enc_tx, disc_tx, state = setup
    fn = jax.jit(functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx))
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, size=(4, 8, 8, 3)).astype(np.float32))
    stages, deltas = [], []
    for _ in range(5):
        state, m = fn(state, run.frozen, {"image": x})
        stages.append(int(m["progressive_stage"]))
        deltas.append(float(m["total_delta_loss"]))
        assert abs(float(m["loss"]) - (float(m["loss_dist"]) + float(m["loss_edit"]))) < 1e-5
        want_edit = config.delta_norm_lambda * float(m["total_delta_loss"]) + config.w_discriminator_lambda * float(
            m["encoder_discriminator_loss"]
        )
        assert abs(float(m["loss_edit"]) - want_edit) < 1e-5
    # small_config: progressive_start 1, one more delta per step, 4 codes (stage ≤ 3).
    assert stages == [0, 1, 2, 3, 3]
    assert deltas[0] == 0.0 and deltas[1] > 0


def test_bfloat16_compute_keeps_float32_state():
    from e4e_jax.training.step import train_step
    from tests.training_helpers import small_config

    config = small_config(batch_size=4, compute_dtype="bfloat16", use_w_pool=False)
    run, enc_tx, disc_tx, state = _setup(config)
    fn = jax.jit(functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx))
    x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, size=(4, 8, 8, 3)).astype(np.float32))
    new, m = fn(state, run.frozen, {"image": x})
    assert all(
        a.dtype == jnp.float32 for a in jax.tree.leaves(new.encoder_params) if jnp.issubdtype(a.dtype, jnp.floating)
    )
    assert np.isfinite(float(m["loss"])) and float(m["nonfinite_params"]) == 0
    assert 0.5 < float(m["loss_l2"]) < 2.0  # images in [-1, 1] vs a random-init reconstruction


def test_w_mode_trains_one_code_for_every_layer(tmp_path):
    """encoder.mode='w' with the real SingleStyleCodeEncoder (toy widths) and the latent discriminator: the
    distortion falls on a fixed batch, there is no Δ-regularisation term, every code row is the same w, and
    the exported bundle loads back as a W encoder."""
    import ml_collections

    from e4e_jax import inversion
    from e4e_jax.configs import ffhq_w
    from e4e_jax.models.w_encoder import SingleStyleCodeEncoder
    from e4e_jax.training import finish
    from e4e_jax.training.state import encoder_variables
    from e4e_jax.training.step import train_step
    from tests.training_helpers import small_config

    toy = ml_collections.ConfigDict(dict(widths=(8, 8, 16, 16), units=(1, 1, 1, 1)))
    config = ffhq_w.w_encoder(small_config(batch_size=4, **{"encoder.arch": "e4e", "encoder.kwargs": toy}))
    run, enc_tx, disc_tx, state0 = _setup(config)
    assert isinstance(run.nets.encoder, SingleStyleCodeEncoder) and not run.step_cfg.progressive
    fn = jax.jit(functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx))
    x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, size=(4, 8, 8, 3)).astype(np.float32))
    state, l2 = state0, []
    for _ in range(4):
        state, m = fn(state, run.frozen, {"image": x})
        l2.append(float(m["loss_l2"]))
        assert not any("delta" in k for k in m) and float(m["encoder_discriminator_loss"]) > 0
    assert l2[-1] < l2[0], l2
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(state0.encoder_params), jax.tree.leaves(state.encoder_params))
    )
    assert moved > 0

    out = finish.export_bundle(run, state, config, tmp_path)
    model = inversion.load_e4e(str(out))
    assert isinstance(model.encoder, SingleStyleCodeEncoder) and model.encoder.widths == (8, 8, 16, 16)
    codes = np.asarray(inversion.encode(model, model.variables, x))
    want = np.asarray(run.nets.encoder.apply(encoder_variables(state), x)) + run.frozen["latent_avg"][None]
    assert codes.shape == (4, 4, 512) and np.all(codes == codes[:, :1]) and np.ptp(codes[:, 0], axis=0).max() > 0
    np.testing.assert_allclose(codes, want, rtol=0, atol=1e-5)


if __name__ == "__main__":
    if sys.argv[1:] == ["one_vs_many"]:
        print(json.dumps(_worker_one_vs_many()))
