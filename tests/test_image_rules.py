"""The reading rules every command shares (e4e_jax/data/folder.py): 32-bit integer images decided by the
range of their values, and EXIF orientation applied by `invert`'s decoders as by `align`.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from e4e_jax import alignment
from e4e_jax.batch_inversion import job
from e4e_jax.data import folder

RNG = np.random.default_rng(7)


def _int32_tif(path, values: np.ndarray):
    Image.fromarray(values.astype(np.int32), "I").save(path)
    with Image.open(path) as im:
        assert im.mode == "I"  # what a 32-bit integer TIFF opens as
    return path


def test_int32_images_are_read_by_the_range_of_their_values(tmp_path):
    gray8 = RNG.integers(0, 256, (24, 20))
    # 0..255: 8-bit values (they were read as 16-bit: almost black).
    out = folder.load_pixels(_int32_tif(tmp_path / "i8.tif", gray8), (24, 20))
    np.testing.assert_array_equal(out, np.repeat(gray8[..., None], 3, -1).astype(np.uint8))
    # 0..65535 with values above 255: 16-bit, the high byte kept.
    gray16 = RNG.integers(0, 65536, (24, 20))
    out = folder.load_pixels(_int32_tif(tmp_path / "i16.tif", gray16), (24, 20))
    np.testing.assert_array_equal(out[..., 0], (gray16 >> 8).astype(np.uint8))
    # Anything else: skipped with the range found.
    for name, values in (("neg.tif", gray8 - 10), ("big.tif", gray16 * 4)):
        skipped = folder.load_pixels(_int32_tif(tmp_path / name, values), (24, 20))
        assert isinstance(skipped, folder.Skipped) and "32-bit integer image with pixel values in [" in skipped.reason
    # Face alignment reads them by the same rule.
    np.testing.assert_array_equal(np.asarray(alignment.read_rgb(tmp_path / "i8.tif"))[..., 0], gray8)


@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, -1), (8, 1)])
def test_invert_decoders_and_align_apply_exif_orientation(tmp_path, orientation, turn):
    stored = RNG.integers(0, 256, (48, 64, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif)
    upright = np.rot90(stored, k=turn)
    # invert's decode step (what its worker processes run), at the photo's own size: no resize.
    ((_, pixels),) = job._prepare_plain(str(tmp_path / "photo.png"), upright.shape[:2], fast_decode=False)
    np.testing.assert_array_equal(pixels, upright)
    np.testing.assert_array_equal(np.asarray(alignment.read_rgb(tmp_path / "photo.png")), upright)


def test_fast_decode_keeps_the_orientation(tmp_path):
    """--fast-decode asks the JPEG decoder for a size that still covers the target once the photo is turned."""
    yy, xx = np.mgrid[0:400, 0:240] / 400.0
    stored = np.clip(np.stack([np.sin(6 * xx + c) * np.cos(5 * yy) for c in range(3)], -1) * 100 + 128, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored.astype(np.uint8)).save(tmp_path / "p.jpg", exif=exif, quality=95)
    exact = folder.load_pixels(tmp_path / "p.jpg", (60, 100))
    fast = folder.load_pixels(tmp_path / "p.jpg", (60, 100), fast_decode=True)
    assert exact.shape == fast.shape == (60, 100, 3)
    assert np.abs(exact.astype(int) - fast.astype(int)).mean() < 3  # the same picture, the same way up
