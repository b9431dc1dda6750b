"""What compute_dtype='bfloat16' puts in bfloat16 and what it keeps in float32 (issue 29), read from the traced
training step of the tiny config (no compilation): every convolution of the encoder, the generator and
LPIPS (forward and backward) takes bf16 operands, and the state the step returns (parameters, optimizer
state, BatchNorm statistics, latent pools) and its metrics are float32. The similarity networks (ArcFace,
MoCo) follow the dtype they are given, and their loss stays float32.
"""

from __future__ import annotations

import functools

import jax
import jax.extend as jex
import jax.numpy as jnp
import pytest

from e4e_jax import losses

CONV = "conv_general_dilated"


def _primitives(jaxpr, name: str) -> list:
    """Every `name` equation of a jaxpr and of the jaxprs nested in it (cond branches, custom rules, ...)."""
    found = [e for e in jaxpr.eqns if e.primitive.name == name]
    for sub in jex.core.subjaxprs(jaxpr):
        found += _primitives(sub, name)
    return found


def _operand_dtypes(eqns) -> set[str]:
    return {str(v.aval.dtype) for e in eqns for v in e.invars}


@pytest.fixture(scope="module")
def bf16_step():
    """(traced jaxpr of one bf16 training step of the tiny config, the shapes it returns)."""
    from e4e_jax.configs import tiny
    from e4e_jax.training import networks, optim
    from e4e_jax.training.state import init_train_state
    from e4e_jax.training.step import train_step

    config = tiny.get_config()
    config.compute_dtype = "bfloat16"
    run = networks.build(config)
    enc_tx = optim.encoder_optimizer(config.optim_name, config.learning_rate)
    disc_tx = optim.discriminator_optimizer(config.w_discriminator_lr)
    h, w = config.data.image_size
    state = jax.eval_shape(
        lambda: init_train_state(
            encoder=run.nets.encoder,
            discriminator=run.nets.discriminator,
            encoder_tx=enc_tx,
            disc_tx=disc_tx,
            optim_name=config.optim_name,
            seed=0,
            input_shape=(1, h, w, 3),
            style_dim=run.gen_cfg.style_dim,
            pool_size=config.w_pool_size,
        )
    )
    batch = {"image": jax.ShapeDtypeStruct((config.batch_size, h, w, 3), jnp.float32)}
    fn = functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx)
    traced, shapes = jax.make_jaxpr(fn, return_shape=True)(state, run.frozen, batch)
    return traced.jaxpr, shapes


def test_bf16_step_convolves_in_bfloat16(bf16_step):
    convs = _primitives(bf16_step[0], CONV)
    # encoder, generator and LPIPS, forward and backward: dozens of convolutions
    assert len(convs) > 50, len(convs)
    assert _operand_dtypes(convs) == {"bfloat16"}


def test_bf16_step_keeps_state_and_metrics_float32(bf16_step):
    new_state, metrics = bf16_step[1]
    floats = [x.dtype for x in jax.tree.leaves(new_state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and set(floats) == {jnp.dtype(jnp.float32)}
    assert {m.dtype for m in metrics.values()} == {jnp.dtype(jnp.float32)}


def _similarity_variables(kind: str):
    """Shapes (nothing initialised) of an ArcFace IR-SE50's variables or of a one-block-per-stage MoCo
    ResNet's (the loss reads the stage sizes from them), and the loss function."""
    key, x = jax.random.key(0), jnp.zeros
    if kind == "id":
        from e4e_jax.models.arcface import ArcFace

        return jax.eval_shape(ArcFace().init, key, x((1, 112, 112, 3))), losses.id_loss
    from e4e_jax.models.resnet import ResNet

    return jax.eval_shape(ResNet(stage_sizes=(1, 1, 1, 1)).init, key, x((1, 224, 224, 3))), losses.moco_loss


@pytest.mark.parametrize("kind", ["id", "moco"])
def test_similarity_loss_networks_follow_dtype(kind):
    variables, loss = _similarity_variables(kind)
    images = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    fn = jax.value_and_grad(lambda v, a, b: loss(v, a, b, dtype=jnp.bfloat16), argnums=1)
    traced, (value, grad) = jax.make_jaxpr(fn, return_shape=True)(variables, images, images)
    assert _operand_dtypes(_primitives(traced.jaxpr, CONV)) == {"bfloat16"}
    assert value.dtype == grad.dtype == jnp.float32
