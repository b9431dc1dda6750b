"""Resampling steps of the similarity losses (ID: crop + adaptive pool; MoCo: nearest resize) vs torch.

The loss values and gradients themselves are checked against PyTorch in test_lpips.py, test_arcface.py
and test_moco.py, which hold the (expensive) networks as module fixtures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from e4e_jax.losses import ID_CROP
from e4e_jax.models.resampling import adaptive_avg_pool2d, adaptive_pool_matrix, interpolate_nearest, nearest_indices


def _nhwc(t):
    return jnp.asarray(np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1)))


@pytest.mark.parametrize("n_in,n_out", [(188, 112), (1024, 256), (100, 7), (5, 8), (112, 112)])
def test_adaptive_pool_matrix_bins(n_in, n_out):
    """Rows are torch's bins [floor(i·in/out), ceil((i+1)·in/out)) with uniform weights."""
    m = adaptive_pool_matrix(n_in, n_out)
    eye = torch.eye(n_in).reshape(n_in, 1, n_in)  # pool each one-hot row: column j = weight of input j
    ref = F.adaptive_avg_pool1d(eye, n_out)[:, 0, :].numpy().T
    np.testing.assert_allclose(m, ref, atol=1e-7)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)


def test_id_crop_and_pool_match_torch():
    img = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    img.requires_grad_(True)
    ref = F.adaptive_avg_pool2d(img[:, :, 35:223, 32:220], (112, 112))
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    (ref * w).sum().backward()

    def ours(a):
        return adaptive_avg_pool2d(a[:, ID_CROP[0], ID_CROP[1], :], (112, 112))

    out = jax.jit(ours)(_nhwc(img))
    assert out.shape == (2, 112, 112, 3)
    assert np.abs(np.asarray(out) - ref.detach().numpy().transpose(0, 2, 3, 1)).max() <= 1e-6
    grad = jax.grad(lambda a: jnp.sum(ours(a) * _nhwc(w)))(_nhwc(img))
    np.testing.assert_allclose(np.asarray(grad), img.grad.numpy().transpose(0, 2, 3, 1), atol=1e-6)


# 76 and 248: sizes where torch's float32 index rule differs from exact integer floor(i·in/out).
@pytest.mark.parametrize(
    "n_in,n_out", [(64, 224), (256, 224), (224, 224), (112, 224), (300, 224), (76, 224), (248, 224), (7, 5)]
)
def test_nearest_resize_matches_torch(n_in, n_out):
    t = torch.arange(n_in, dtype=torch.float32).reshape(1, 1, n_in, 1)
    ref_idx = F.interpolate(t, size=(n_out, 1))[0, 0, :, 0].numpy().astype(np.int64)
    np.testing.assert_array_equal(nearest_indices(n_in, n_out), ref_idx)
    img = torch.randn(2, 3, n_in, n_in + 3, generator=torch.Generator().manual_seed(n_in)).requires_grad_(True)
    ref = F.interpolate(img, size=(n_out, n_out))
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    (ref * w).sum().backward()
    out = interpolate_nearest(_nhwc(img), (n_out, n_out))
    np.testing.assert_array_equal(np.asarray(out), ref.detach().numpy().transpose(0, 2, 3, 1))
    grad = jax.grad(lambda a: jnp.sum(interpolate_nearest(a, (n_out, n_out)) * _nhwc(w)))(_nhwc(img))
    np.testing.assert_allclose(np.asarray(grad), img.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5)
