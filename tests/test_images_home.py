"""Pixel normalisation and to_uint8 have one definition (e4e_jax/images.py): the host (numpy) and device
(jax.numpy, inside jit) paths agree: to_uint8 exactly, normalisation to an ulp (XLA may rewrite x / 255 under
jit, as it did before the two copies became one)."""

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import images
from e4e_jax.data import folder
from e4e_jax.inference import inversion


def test_normalize_host_and_device_agree_to_an_ulp():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    host = folder.normalize(pixels)
    device = np.asarray(jax.jit(inversion.normalize_input)(jnp.asarray(pixels)))
    assert host.dtype == device.dtype == np.float32
    np.testing.assert_allclose(device, host, rtol=0, atol=np.finfo(np.float32).eps)
    np.testing.assert_array_equal(images.normalize(pixels), host)
    assert host.min() == -1.0 and host.max() == 1.0


def test_to_uint8_host_and_device_agree():
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 8, 8, 3)).astype(np.float32)
    x[0, 0, 0] = [np.nan, -1.0, 1.0]
    host = images.to_uint8(x)
    device = np.asarray(jax.jit(inversion.to_uint8)(jnp.asarray(x)))
    np.testing.assert_array_equal(host, device)
    assert host.dtype == device.dtype == np.uint8 and list(host[0, 0, 0]) == [0, 0, 255]
