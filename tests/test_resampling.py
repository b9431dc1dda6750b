"""`resampling.pool_and_crop`, the one "pool to 256 and crop" of training, data and evaluation, vs torch.

The separate resizes are checked against torch where their users are tested: adaptive pool and
nearest in test_losses.py, bilinear (align_corners=False) in test_inception.py, bilinear with
align_corners=True in test_encoder_parity.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from e4e_jax.models import resampling


@pytest.mark.parametrize("size,rows", [(256, None), (512, None), (64, None), (512, (32, 224)), (300, (10, 20))])
def test_pool_and_crop_is_face_pool_then_rows(size, rows):
    x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
    ref = F.adaptive_avg_pool2d(torch.from_numpy(x), (256, 256)).numpy().transpose(0, 2, 3, 1)
    if rows is not None:
        ref = ref[:, rows[0] : rows[1]]
    ours = np.asarray(resampling.pool_and_crop(jnp.asarray(x.transpose(0, 2, 3, 1)), rows=rows))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)


def test_pool_and_crop_other_size_and_identity():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32))
    assert resampling.pool_and_crop(x, (8, 8)) is x  # already at the size: untouched
    np.testing.assert_array_equal(
        np.asarray(resampling.pool_and_crop(x, (4, 4), (1, 3))),
        np.asarray(x.reshape(1, 4, 2, 4, 2, 3).mean(axis=(2, 4)))[:, 1:3],
    )


def test_resize_area_or_linear():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 12, 12, 3)).astype(np.float32))
    np.testing.assert_array_equal(
        np.asarray(resampling.resize_area_or_linear(x, (4, 6))),  # what invert did
        np.asarray(x.reshape(2, 4, 3, 6, 2, 3).mean(axis=(2, 4))),
    )
    assert resampling.resize_area_or_linear(x, (12, 12)) is x
    np.testing.assert_array_equal(
        np.asarray(resampling.resize_area_or_linear(x, (5, 7))),
        np.asarray(jax.image.resize(x, (2, 5, 7, 3), method="linear", antialias=True)),
    )
