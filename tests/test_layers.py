"""Layer-level equalities behind the fast paths (the whole-generator torch parity tests cover the rest)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.models import layers


def _rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("kernel,factor", [((1, 3, 3, 1), 2), ((1, 2, 1), 2), ((1, 3, 3, 1), 3), ((1,), 2)])
def test_polyphase_upsample_equals_zero_stuffing(kernel, factor):
    x = _rand((2, 7, 5, 3))
    taps = layers.fir_taps(kernel)
    p = len(taps) - factor
    ref = layers.upfirdn2d(x, taps, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), gain=factor**2)
    out = layers.upsample2d(x, taps, factor)
    assert out.shape == ref.shape == (2, 7 * factor, 5 * factor, 3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6, rtol=0)


@pytest.mark.parametrize("demodulate", [False, True])
def test_1x1_activation_path_matches_grouped_conv(demodulate):
    x, w, s = _rand((3, 6, 5, 8), 1), _rand((1, 1, 8, 4), 2), _rand((3, 8), 3) + 1.0
    kw = dict(demodulate=demodulate, precision="highest")
    ref = layers.modulated_conv2d(x, w, s, path="grouped", **kw)
    out = layers.modulated_conv2d(x, w, s, path="activation", **kw)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=1e-5)
    # The 1×1 case must not run a convolution: it is a per-sample matmul.
    hlo = jax.jit(lambda x, s: layers.modulated_conv2d(x, w, s, path="activation", **kw)).lower(x, s).as_text()
    assert "convolution" not in hlo and "dot_general" in hlo
