"""Tests of the inference image-folder reader (e4e_jax/data/folder.py).

Expected values are computed here from PIL + numpy independently of the reader: the official
transform is convert('RGB') -> PIL bilinear resize to (W, H) -> /255 -> (x - .5) / .5.
"""

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from e4e_jax import images
from e4e_jax.data import folder
from tests.assets import require

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

RNG = np.random.default_rng(1234)


def _smooth_rgb(h, w):
    """A smooth random image (JPEG keeps it nearly intact, resizing changes it measurably)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [np.sin(6 * xx + 2 * c) * np.cos(5 * yy - c) for c in range(3)]
    img = np.stack(chans, -1) * 100 + 128 + RNG.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _reference(path, size_hw):
    """Official preprocessing written out with PIL + numpy (16-bit gray: high byte, see reader doc)."""
    img = Image.open(path)
    if img.mode.startswith("I"):
        img = Image.fromarray((np.asarray(img).astype(np.int64) // 256).astype(np.uint8))
    img = img.convert("RGB")
    h, w = size_hw
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img).astype(np.float64) / 127.5 - 1.0


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(w, h):
    """A tiny PNG whose header claims w x h pixels (1-bit grayscale)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    Image.fromarray(_smooth_rgb(300, 200)).save(d / "a_rgb_tall.jpg", quality=95)
    Image.fromarray(_smooth_rgb(120, 400)).save(d / "b_rgb_wide.png")
    Image.fromarray(_smooth_rgb(256, 256)).save(d / "c_exact.png")
    Image.fromarray(_smooth_rgb(64, 48)).save(d / "d_small_upscaled.BMP")
    Image.fromarray(_smooth_rgb(90, 70)[..., 0]).save(d / "e_gray.png")
    la = np.stack([_smooth_rgb(50, 60)[..., 1], RNG.integers(0, 256, (50, 60), dtype=np.uint8)], -1)
    Image.fromarray(la, "LA").save(d / "f_gray_alpha.png")
    rgba = np.concatenate([_smooth_rgb(80, 80), RNG.integers(0, 256, (80, 80, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(d / "g_rgba.png")
    Image.fromarray(_smooth_rgb(70, 90)).quantize(37).save(d / "h_palette.png")
    Image.fromarray(_smooth_rgb(100, 100)).convert("CMYK").save(d / "i_cmyk.JPEG", quality=95)
    Image.fromarray(_smooth_rgb(40, 50)).save(d / "j_lossless.webp", lossless=True)
    Image.fromarray(_smooth_rgb(33, 44)).save(d / "k_tiff.tif")
    sixteen = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40 + 7).astype(np.uint16)
    Image.fromarray(sixteen).save(d / "l_16bit.png")
    (d / "notes.txt").write_text("not an image")
    (d / "sub").mkdir()
    Image.fromarray(_smooth_rgb(20, 20)).save(d / "sub" / "m_nested.png")
    return d


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    jpg = io.BytesIO()
    Image.fromarray(_smooth_rgb(128, 128)).save(jpg, "JPEG", quality=95)
    (d / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    png = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png, "PNG")
    (d / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    corrupt = bytearray(png.getvalue())
    corrupt[100:180] = b"\xff" * 80  # inside IDAT: the zlib stream breaks
    (d / "corrupt.png").write_bytes(bytes(corrupt))
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("hello, I am not a PNG\n" * 10)
    Image.fromarray(_smooth_rgb(4, 4)).save(d / "tiny.png")
    Image.fromarray(_smooth_rgb(30, 5)).save(d / "thin.png")
    (d / "bomb.png").write_bytes(_png_header_only(60000, 60000))  # PIL itself refuses this
    (d / "big.png").write_bytes(_png_header_only(10000, 10000))  # above our default max_pixels
    return d


GOOD_NAMES = [
    "a_rgb_tall.jpg",
    "b_rgb_wide.png",
    "c_exact.png",
    "d_small_upscaled.BMP",
    "e_gray.png",
    "f_gray_alpha.png",
    "g_rgba.png",
    "h_palette.png",
    "i_cmyk.JPEG",
    "j_lossless.webp",
    "k_tiff.tif",
]
ALL_GOOD = GOOD_NAMES + ["l_16bit.png"]


def test_list_images_sorted_filtered_and_recursive(good_dir, tmp_path):
    names = [p.name for p in folder.list_images(good_dir)]
    assert names == ALL_GOOD  # notes.txt and sub/ left out, sorted order
    rec = [p.relative_to(good_dir).as_posix() for p in folder.list_images(good_dir, recursive=True)]
    assert rec == ALL_GOOD + ["sub/m_nested.png"]
    with pytest.raises(NotADirectoryError, match="nope"):
        folder.list_images(tmp_path / "nope")


@pytest.mark.parametrize("name", ALL_GOOD)
@pytest.mark.parametrize("preset", ["ffhq", "cars"])
def test_preprocessing_matches_official_transform(good_dir, name, preset):
    size = folder.PRESETS[preset]
    out = folder.load_image(good_dir / name, preset)
    assert not isinstance(out, folder.Skipped), out
    assert out.dtype == np.float32 and out.shape == (*size, 3)
    ref = _reference(good_dir / name, size)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


def test_resize_changes_pixels_and_exact_size_is_untouched(good_dir):
    """Guards against a reference that cannot fail: the resized output differs from a nearest
    resize, and a 256x256 input is returned pixel for pixel."""
    out = folder.load_image(good_dir / "a_rgb_tall.jpg", (256, 256))
    img = Image.open(good_dir / "a_rgb_tall.jpg").convert("RGB")
    nearest = np.asarray(img.resize((256, 256), Image.NEAREST)) / 127.5 - 1
    assert np.abs(out - nearest).max() > 0.05
    exact = folder.load_image(good_dir / "c_exact.png", (256, 256))
    raw = np.asarray(Image.open(good_dir / "c_exact.png"))
    np.testing.assert_allclose(exact, raw / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(images.to_uint8(exact), raw)


def test_mode_conversions_follow_convert_rgb(good_dir):
    # RGBA: alpha is dropped, not composited (what the official convert('RGB') does).
    rgba = np.asarray(Image.open(good_dir / "g_rgba.png"))
    out = folder.load_image(good_dir / "g_rgba.png", (80, 80))
    np.testing.assert_array_equal(images.to_uint8(out), rgba[..., :3])
    # Grayscale: three equal channels.
    gray = folder.load_image(good_dir / "e_gray.png", (90, 70))
    np.testing.assert_array_equal(
        images.to_uint8(gray), np.repeat(np.asarray(Image.open(good_dir / "e_gray.png"))[..., None], 3, -1)
    )
    # Palette: looked-up colours.
    pal = Image.open(good_dir / "h_palette.png")
    assert pal.mode == "P"
    np.testing.assert_array_equal(
        images.to_uint8(folder.load_image(good_dir / "h_palette.png", (70, 90))), np.asarray(pal.convert("RGB"))
    )


def test_16bit_grayscale_is_scaled_not_clipped(good_dir):
    path = good_dir / "l_16bit.png"
    raw = np.asarray(Image.open(path)).astype(np.int64)
    assert Image.open(path).mode.startswith("I") and raw.max() > 255
    out = folder.load_image(path, (40, 40))
    expected = (raw >> 8).astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(out, np.repeat(expected[..., None], 3, -1), atol=1e-6)
    # convert('RGB') would have saturated almost everything to white:
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.9
    assert (images.to_uint8(out) == 255).mean() < 0.01


def test_exif_orientation_is_applied_and_optional(tmp_path):
    """The one rule of every reader (invert, align, evaluate, edit): the photo as it is meant to be seen.
    The official transform ignores the tag; exif_transpose=False gives its pixels."""
    arr = _smooth_rgb(40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(tmp_path / "rot.png", exif=exif)
    plain = folder.load_image(tmp_path / "rot.png", (40, 64), exif_transpose=False)
    np.testing.assert_array_equal(images.to_uint8(plain), arr)  # official: orientation ignored
    turned = folder.load_image(tmp_path / "rot.png", (64, 40), exif_transpose=True)
    np.testing.assert_array_equal(images.to_uint8(turned), np.rot90(arr, k=-1))
    default = folder.load_image(tmp_path / "rot.png", (64, 40))
    np.testing.assert_array_equal(default, turned)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated.jpg", "truncated"),
        ("truncated.png", "truncated"),
        ("corrupt.png", "cannot decode"),
        ("empty.jpg", "empty"),
        ("text.png", "not a readable image"),
        ("tiny.png", "smaller than the minimum 8x8"),
        ("thin.png", "smaller than the minimum 8x8"),
        ("bomb.png", "decompression bomb"),
        ("big.png", "decompression bomb"),
    ],
)
def test_bad_files_are_skipped_with_reason(bad_dir, name, reason):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    out = folder.load_image(bad_dir / name, (256, 256))
    assert isinstance(out, folder.Skipped), f"{name} was loaded"
    assert out.path == bad_dir / name
    assert reason in out.reason, out.reason


def test_size_limits_are_configurable(good_dir, bad_dir):
    assert isinstance(folder.load_image(good_dir / "c_exact.png", "ffhq", max_pixels=256 * 255), folder.Skipped)
    assert not isinstance(folder.load_image(bad_dir / "tiny.png", "ffhq", min_size=4), folder.Skipped)


def test_refuses_to_run_with_truncated_loading_on(bad_dir, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        folder.load_image(bad_dir / "truncated.jpg", (256, 256))


@pytest.mark.parametrize("n_good, sizes", [(12, [5, 5, 2]), (10, [5, 5, 0])])
def test_iter_batches_order_grouping_and_skips(good_dir, bad_dir, n_good, sizes):
    paths = []
    bad = sorted(bad_dir.iterdir())
    for i, g in enumerate(folder.list_images(good_dir)[:n_good]):
        paths.append(g)
        if i % 3 == 1 and bad:
            paths.append(bad.pop())
    paths += bad  # a bad tail after a full batch is reported in a final empty batch
    size = (32, 48)
    results = {w: list(folder.iter_batches(paths, 5, size, num_workers=w)) for w in (0, 4)}
    for w, batches in results.items():
        seen_good = [p for _, good, _ in batches for p in good]
        seen_bad = [s.path for _, _, skipped in batches for s in skipped]
        assert seen_good == [p for p in paths if p.parent == good_dir], w
        assert seen_bad == [p for p in paths if p.parent == bad_dir], w
        assert [b.shape[0] for b, _, _ in batches] == sizes
        for b, good, _ in batches:
            assert b.dtype == np.float32 and b.shape[1:] == (*size, 3)
            for img, p in zip(b, good):
                np.testing.assert_allclose(img, _reference(p, size), atol=1e-6)
    for (b0, g0, s0), (b4, g4, s4) in zip(results[0], results[4]):
        np.testing.assert_array_equal(b0, b4)
        assert g0 == g4 and s0 == s4


def test_to_uint8_and_atomic_save_png(tmp_path):
    x = np.array([[-1.5, -1.0, -0.999, 0.0, 1.0, 2.0, np.nan]], np.float32)
    np.testing.assert_array_equal(images.to_uint8(x), [[0, 0, 0, 128, 255, 255, 0]])
    img = _smooth_rgb(17, 23)
    f = img.astype(np.float32) / 127.5 - 1
    images.save_png(tmp_path / "out" / "a.png", f)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), img)
    images.save_png(tmp_path / "out" / "a.png", img[..., 0])  # overwrite in place
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), img[..., 0])
    (tmp_path / "out" / "dir.png").mkdir()
    with pytest.raises(OSError):
        images.save_png(tmp_path / "out" / "dir.png", img)  # os.replace onto a directory fails
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "dir.png"]  # no temp left
    with pytest.raises(ValueError, match="shape"):
        images.save_png(tmp_path / "x.png", np.zeros((4, 4, 4), np.uint8))


def test_presets_and_size_errors():
    assert folder.PRESETS["cars"] == (192, 256)
    assert all(folder.PRESETS[k] == (256, 256) for k in ("ffhq", "celeba_hq", "horse", "church", "cats"))
    with pytest.raises(ValueError, match="preset"):
        folder.resolve_size("afhq_dog")


def test_no_tensorflow_or_torch_import():
    code = (
        "import sys, e4e_jax.data.folder; "
        'bad = [m for m in ("torch", "tensorflow") if m in sys.modules]; '
        "assert not bad, bad"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1], env=env)


def test_real_sample_photos():
    images = require("images")
    paths = folder.list_images(images)
    assert [p.name for p in paths] == ["car_img.jpg", "church_img.jpg", "horse_img.jpg", "input_img.jpg"]
    for p in paths:
        preset = {"car_img.jpg": "cars", "church_img.jpg": "church", "horse_img.jpg": "horse"}.get(p.name, "ffhq")
        size = folder.PRESETS[preset]
        out = folder.load_image(p, preset)
        assert not isinstance(out, folder.Skipped), out
        assert out.shape == (*size, 3) and -1 <= out.min() and out.max() <= 1
        np.testing.assert_allclose(out, _reference(p, size), atol=1e-6)
    ((batch, good, skipped),) = folder.iter_batches(paths, 8, "ffhq")
    assert batch.shape == (4, 256, 256, 3) and good == paths and skipped == []
