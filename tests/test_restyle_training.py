"""ReStyle training (issue 27, part 4): the iterative step against a plain re-statement of the official coach,
its agreement with ReStyle inference on the exported bundle, the tiny config learning, exporting a
'restyle' bundle and resuming exactly, the configs' official values and rules, and the encoder inits.

The official coach (training/coach_restyle_e4e.py `perform_train_iteration_on_batch`) runs n iterations,
each `loss.backward()` with y_hat and the latent of the previous iteration detached, then one optimizer
step: the gradient is the sum of the iterations' gradients with the loop state held constant. The reference
here takes one `jax.grad` of the sum of the iterations' losses, stop_gradient on the carried state (an
unrolled Python loop); the step differentiates each iteration inside a `lax.scan`.
"""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from e4e_jax import configs
from e4e_jax.errors import UserError
from e4e_jax.inference import restyle
from e4e_jax.models.encoder_types import EncoderConfig
from e4e_jax.training import config_rules, networks, optim, schedule
from e4e_jax.training.finish import export_bundle
from e4e_jax.training.state import init_train_state
from e4e_jax.training.step import eval_step, objective, render, train_step
from tests.training_helpers import read_state, small_config, worst_relative_difference

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

N_ITERS = 3
# The step's per-iteration VJPs in a scan vs one grad of the unrolled sum: float32 reordering only.
GRAD_RTOL = 1e-5


def _record_gradients() -> optax.GradientTransformation:
    """An 'optimizer' that leaves the parameters and keeps the last gradients as its state."""
    return optax.GradientTransformation(
        lambda p: jax.tree.map(jnp.zeros_like, p), lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g)
    )


def _small_restyle(**overrides):
    """The small test config (8x8 generator, 4 codes, SmallEncoder) as ReStyle-e4e with the stored noise."""
    return small_config(
        **{"encoder.mode": "restyle_e4e", "n_iters_per_batch": N_ITERS, "train_noise": "const", "batch_size": 4},
        **overrides,
    )


def test_step_sums_the_gradients_of_the_detached_iterations():
    config = _small_restyle()
    run = networks.build(config)
    nets, cfg, frozen = run.nets, run.step_cfg, run.frozen
    assert cfg.n_iters_per_batch == N_ITERS and run.input_nc == 6 and frozen["average_image"].shape == (1, 8, 8, 3)
    record, disc_tx = _record_gradients(), optim.discriminator_optimizer(config.w_discriminator_lr)
    state = init_train_state(
        encoder=nets.encoder,
        discriminator=nets.discriminator,
        encoder_tx=record,
        disc_tx=disc_tx,
        optim_name="adam",
        seed=0,
        input_shape=(1, 8, 8, 6),
        style_dim=512,
        pool_size=config.w_pool_size,
    )
    stage = 2  # step 2 of progressive_start 1, every 1: deltas 1-2 on, so Δ-reg and D see several layers
    assert schedule.progressive_stage(2, cfg.n_styles, cfg.progressive_start, cfg.progressive_step_every) == stage
    state = state.replace(step=jnp.asarray(2, jnp.int32))
    x = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32))
    new, metrics = jax.jit(functools.partial(train_step, nets, cfg, record, disc_tx))(state, frozen, {"image": x})

    params, n = state.encoder_params, cfg.n_styles
    active = jnp.arange(n) <= stage

    def enc(p, stats, inp):
        out, upd = nets.encoder.apply(
            {"params": p, "batch_stats": stats}, inp, stage, train=True, mutable=["batch_stats"]
        )
        return out, upd["batch_stats"]

    avg = jnp.broadcast_to(frozen["average_image"], x.shape)
    latent_avg = jnp.broadcast_to(jnp.asarray(frozen["latent_avg"]), (4, n, 512))
    fake, stats_after_d = enc(params, state.encoder_batch_stats, jnp.concatenate([x, avg], -1))  # the D pass

    def total(p, detach=True):
        keep = jax.lax.stop_gradient if detach else (lambda a: a)
        y, previous, stats, out, losses = avg, latent_avg, stats_after_d, 0.0, []
        for _ in range(N_ITERS):
            raw, stats = enc(p, stats, jnp.concatenate([x, keep(y)], -1))
            codes = raw + keep(previous)  # latent_avg first, then the last codes
            y = render(nets.generator, frozen["generator"], codes, cfg, jax.random.key(0))  # stored noise
            loss = objective(nets, cfg, frozen, new.disc_params, codes, y, x, active)[0]
            out, previous = out + loss, codes
            losses.append(loss)
        return out, (stats, losses)

    (_, (stats_ref, losses_ref)), grads_ref = jax.value_and_grad(total, has_aux=True)(params)
    worst, where = worst_relative_difference(grads_ref, new.encoder_opt_state)
    assert worst <= GRAD_RTOL, (worst, where)
    # N + 1 train-mode passes moved the running statistics (the D pass, then every iteration).
    worst, where = worst_relative_difference(stats_ref, new.encoder_batch_stats)
    assert worst <= GRAD_RTOL, (worst, where)
    for t in range(N_ITERS):
        assert math.isclose(float(metrics[f"loss_iter_{t}"]), float(losses_ref[t]), rel_tol=1e-5)
    assert float(metrics["loss"]) == float(metrics[f"loss_iter_{N_ITERS - 1}"])  # official loss_dict: the last
    # Back-propagating through the chain of iterations (no detaching) gives another gradient: the test can fail.
    _, grads_chain = jax.value_and_grad(lambda p: total(p, detach=False), has_aux=True)(params)
    assert worst_relative_difference(grads_ref, grads_chain)[0] > 100 * GRAD_RTOL

    # D's fake codes are the encoder's raw output (official ReStyle-e4e: no latent_avg added), one of the
    # discriminated layers 0..stage per item, as the pool stores them.
    stored = np.asarray(new.fake_pool.codes)[: int(new.fake_pool.count)]
    raw = np.asarray(fake[:, : stage + 1]).reshape(-1, 512)
    assert len(stored) > 0 and np.abs(np.asarray(frozen["latent_avg"])).max() > 0.1
    for row in stored:
        assert np.abs(raw - row).max(axis=1).min() < 1e-5


def _tiny_restyle(**overrides):
    """configs/tiny_restyle.py shrunk for tests: 16x16 generator (6 codes), the smallest IR-SE sizes, no
    LPIPS (the random AlexNet needs >= 32 px), 3 iterations, a faster learning rate."""
    c = configs.get("tiny_restyle")
    c.generator.random_init = dict(size=16, channels=(16, 16, 16), style_dim=512, n_mlp=1, seed=0)
    c.data.image_size = c.output_size = (16, 16)
    c.encoder.kwargs = ml_collections.ConfigDict(dict(widths=(8, 8, 16, 16), units=(1, 1, 1, 1), style_channels=16))
    c.lpips_lambda = 0.0
    c.n_iters_per_batch = N_ITERS
    c.learning_rate = 1e-3
    c.progressive_start, c.progressive_step_every = 4, 2
    c.data.num_eval_samples = c.test_batch_size = 4
    c.data.prefetch = 1
    for k, v in overrides.items():
        c[k] = v
    return c


def test_eval_iterations_equal_inference_on_the_exported_bundle(tmp_path):
    """The training's iterations (eval mode, stored noise) and restyle.restyle on the exported bundle give the
    same reconstruction: one average image, one residual rule, one frame."""
    config = _tiny_restyle(train_noise="const")
    run = networks.build(config)
    enc_tx = optim.encoder_optimizer(config.optim_name, config.learning_rate)
    disc_tx = optim.discriminator_optimizer(config.w_discriminator_lr)
    init = functools.partial(
        init_train_state,
        encoder=run.nets.encoder,
        discriminator=run.nets.discriminator,
        encoder_tx=enc_tx,
        disc_tx=disc_tx,
        optim_name=config.optim_name,
        seed=0,
        input_shape=(1, 16, 16, run.input_nc),
        style_dim=512,
        pool_size=config.w_pool_size,
    )
    state = jax.jit(init)()
    x = jnp.asarray(np.random.RandomState(1).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32))
    step = jax.jit(functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx))
    for _ in range(2):  # trained weights and moved running statistics
        state, _ = step(state, run.frozen, {"image": x})
    state = state.replace(step=jnp.asarray(100, jnp.int32))  # past the progressive stages: every delta on
    metrics, y_hat = jax.jit(functools.partial(eval_step, run.nets, run.step_cfg))(state, run.frozen, {"image": x})

    path = export_bundle(run, state, config, tmp_path)
    model = restyle.load_restyle(str(path))
    assert isinstance(model, restyle.RestyleModel) and model.iterations == N_ITERS
    variables = restyle.with_average_image(model, model.variables)
    np.testing.assert_allclose(variables[restyle.AVERAGE_IMAGE], run.frozen["average_image"], atol=1e-5)
    latents, images = restyle.make_restyle_fn(model)(variables, x)
    assert latents.shape == (N_ITERS, 4, 6, 512)
    assert float(jnp.abs(images - y_hat).max()) < 1e-4
    assert all(float(jnp.abs(latents[t + 1] - latents[t]).max()) > 1e-3 for t in range(N_ITERS - 1))
    assert set(metrics) >= {"loss", "loss_l2", "loss_iter_0", f"loss_iter_{N_ITERS - 1}"}


def test_tiny_restyle_learns_exports_and_resumes_exactly(tmp_path):
    from e4e_jax.jobs.quickstart import l2_curve
    from e4e_jax.training.loop import train_and_evaluate

    steps = 200  # the per-batch L2 of 4 random samples is noisy: measured 1.27 -> 0.68 (first -> last quarter)
    config = _tiny_restyle(max_steps=steps, save_interval=steps // 2, val_interval=steps, board_interval=1)
    full = train_and_evaluate(config, tmp_path / "full")
    assert full["step"] == steps and math.isfinite(full["train/loss"])
    curve = l2_curve(tmp_path / "full" / "metrics.jsonl")
    assert curve["train_l2_last_quarter"] < 0.8 * curve["train_l2_first_quarter"], curve

    model = restyle.load_restyle(full["model_bundle"])
    cfg = json.loads((tmp_path / "full" / "model" / "config.json").read_text())
    assert cfg["kind"] == "restyle" and cfg["architecture"]["encoder"]["mode"] == "restyle_e4e"
    assert cfg["architecture"]["encoder"]["input_nc"] == 6 and model.iterations == N_ITERS
    x = np.random.RandomState(2).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    latents, images = restyle.make_restyle_fn(model)(model.variables, x)
    assert latents.shape == (N_ITERS, 2, 6, 512) and bool(jnp.all(jnp.isfinite(images)))

    # Stopped at the first checkpoint, continued with --resume: the same state as the uninterrupted run.
    train_and_evaluate(config, tmp_path / "split", max_steps=steps // 2)
    resumed = train_and_evaluate(config, tmp_path / "split", resume=True)
    assert resumed["state_sha256"] == full["state_sha256"]
    a, b = read_state(tmp_path / "full", steps), read_state(tmp_path / "split", steps)
    assert worst_relative_difference(a, b)[0] == 0.0


def test_configs_carry_the_official_training_options():
    e4e, psp, tiny = (configs.get(n) for n in ("ffhq_restyle_e4e", "ffhq_restyle_psp", "tiny_restyle"))
    for c in (e4e, psp, tiny):
        config_rules.validate(c)
        assert config_rules.is_restyle(c) and c.n_iters_per_batch == 5 and c.start_from_latent_avg
    # ReStyle-e4e (README command): e4e's objective and schedule; ReStyle-pSp: no D, no stages, no Δ-reg.
    assert (e4e.encoder.mode, e4e.batch_size, e4e.test_batch_size, e4e.val_interval) == ("restyle_e4e", 8, 8, 1000)
    assert (e4e.w_discriminator_lambda, e4e.use_w_pool, e4e.delta_norm_lambda) == (0.1, True, 2e-4)
    assert (e4e.progressive_start, e4e.progressive_step_every, e4e.use_progressive) == (20_000, 2_000, True)
    assert (e4e.l2_lambda, e4e.lpips_lambda, e4e.id_lambda, e4e.similarity) == (1.0, 0.8, 0.1, "id")
    assert (e4e.optim_name, e4e.learning_rate) == ("ranger", 1e-4)
    assert (psp.encoder.mode, psp.w_discriminator_lambda, psp.use_progressive, psp.use_delta_reg) == (
        "restyle_psp",
        0.0,
        False,
        False,
    )
    assert (psp.val_interval, psp.save_interval, psp.batch_size) == (5_000, 10_000, 8)
    assert tiny.encoder.mode == "restyle_e4e" and tiny.data.image_size == tiny.output_size == (32, 32)


def test_config_rules_of_a_restyle_run():
    c = configs.get("tiny_restyle")
    c.start_from_latent_avg = False
    c.data.image_size = (16, 16)
    c.n_iters_per_batch = 0
    with pytest.raises(UserError) as e:
        config_rules.validate(c)
    lines = str(e.value).splitlines()
    assert len(lines) == 3
    assert any(line.startswith("config.n_iters_per_batch=0: must be a whole number ≥ 1") for line in lines)
    assert any("start_from_latent_avg=False" in line and "latent_avg" in line for line in lines)
    assert any(line.startswith("config.data.image_size=(16, 16)") and "(32, 32)" in line for line in lines)
    c = configs.get("tiny_restyle")
    c.ablation = "D"
    with pytest.raises(ValueError, match="ReStyle encoder"):
        config_rules.apply_ablation(c)
    c = configs.get("tiny")  # an e4e config is not iterative, whatever n_iters_per_batch says
    assert not config_rules.is_restyle(c) and networks.input_channels(c) == 3


def _encoder_variables(mode: str, **kw) -> dict:
    cfg = EncoderConfig(
        mode=mode, n_styles=6, input_size=(16, 16), widths=(8, 8, 16, 16), units=(1, 1, 1, 1), style_channels=16, **kw
    )
    x = jnp.zeros((1, 16, 16, cfg.input_nc))
    seed = 1 if cfg.iterative else 2
    return jax.tree.map(np.asarray, cfg.build().init(jax.random.key(seed), x, None, train=False))


def test_restyle_encoder_starts_from_an_e4e_encoder():
    fresh, e4e = _encoder_variables("restyle_e4e", input_nc=6), _encoder_variables("e4e")
    out = networks.encoder_from_e4e(fresh, e4e, "e4e bundle")
    kernel = out["params"]["backbone"]["input_layer"]["conv"]["kernel"]
    donor = e4e["params"]["backbone"]["input_layer"]["conv"]["kernel"]
    assert kernel.shape == (3, 3, 6, 8) and donor.shape == (3, 3, 3, 8)
    np.testing.assert_array_equal(kernel[:, :, :3], donor)  # RGB weights in channels 0-2
    assert 0.5 < float(np.std(kernel[:, :, 3:])) < 1.5  # official torch.randn in 3-5
    body = lambda v: [a for k, a in networks._leaves(v["params"]["backbone"]).items() if "input_layer" not in k]  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(body(out), body(e4e)))
    stats = networks._leaves(out["batch_stats"]), networks._leaves(e4e["batch_stats"])
    assert all(np.array_equal(stats[0][k], stats[1][k]) for k in stats[0])
    for i in range(6):  # e4e's coarse blocks (i < 3) read the same map as ReStyle's; the others keep the init
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(out["params"][f"styles_{i}"]), jax.tree.leaves(e4e["params"][f"styles_{i}"])
            )
        )
        kept = all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(out["params"][f"styles_{i}"]), jax.tree.leaves(fresh["params"][f"styles_{i}"])
            )
        )
        assert (same, kept) == ((True, False) if i < 3 else (False, True)), i
    # A ResNet-34 ReStyle encoder cannot take an IR-SE backbone: said, with a name.
    resnet = EncoderConfig(mode="restyle_e4e_resnet", n_styles=6, num_layers=34, backbone_mode="resnet", input_nc=6)
    shapes = jax.eval_shape(lambda: resnet.build().init(jax.random.key(0), jnp.zeros((1, 64, 64, 6)), None))
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)
    with pytest.raises(ValueError, match="e4e bundle: its backbone does not match"):
        networks.encoder_from_e4e(zeros, e4e, "e4e bundle")


def test_restyle_encoder_takes_an_arcface_backbone_widened():
    """Official from-scratch init (`__get_encoder_checkpoint`): the IR-SE backbone of ArcFace, its RGB input
    weights in channels 0-2 and N(0, 1) in 3-5; the FPN-free style blocks keep their random init."""
    fresh, donor_encoder = _encoder_variables("restyle_psp", input_nc=6), _encoder_variables("e4e")
    arcface = {  # an ArcFace tree: the IR-SE backbone (here the small test sizes) and its output layers
        "params": {"backbone": donor_encoder["params"]["backbone"], "output_linear": {"kernel": np.ones((2, 2))}},
        "batch_stats": {"backbone": donor_encoder["batch_stats"]["backbone"]},
    }
    out = networks.backbone_from_arcface(fresh, arcface, "arcface bundle")
    kernel = out["params"]["backbone"]["input_layer"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel[:, :, :3], arcface["params"]["backbone"]["input_layer"]["conv"]["kernel"])
    assert 0.5 < float(np.std(kernel[:, :, 3:])) < 1.5
    assert set(out["params"]) == set(fresh["params"])
    for name in out["params"]:
        if name != "backbone":
            assert all(
                a is b for a, b in zip(jax.tree.leaves(out["params"][name]), jax.tree.leaves(fresh["params"][name]))
            )
    wrong = {"params": {"backbone": {"input_layer": arcface["params"]["backbone"]["input_layer"]}}}
    with pytest.raises(ValueError, match="arcface bundle: its backbone does not match"):
        networks.backbone_from_arcface(fresh, wrong, "arcface bundle")
