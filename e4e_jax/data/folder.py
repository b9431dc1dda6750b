"""Plain image-folder reader for inference: no TensorFlow, no torch.

Preprocessing reproduces the official e4e test/inference transform
(omertov/encoder4editing, configs/transforms_config.py and datasets/inference_dataset.py):

    Image.open(path).convert('RGB')
    -> transforms.Resize((H, W))      # on a PIL image torchvision calls img.resize((W, H), BILINEAR)
    -> transforms.ToTensor()          # uint8 / 255
    -> transforms.Normalize(0.5, 0.5) # (x - 0.5) / 0.5, i.e. [-1, 1]

(H, W) is (256, 256) for faces, horses, churches and cats, (192, 256) for cars. PIL's bilinear
resize is its own area-aware filter (it antialiases when shrinking); we call the same PIL function,
so the result is bit-identical to the official pipeline. An image already at the target size is
used as it is (PIL's resize to the same size is a copy anyway).

Departures from `convert('RGB')`, on inputs the official code mishandles:
- 16-bit grayscale ('I;16*'): `convert('RGB')` clips every value above 255 to white. We scale to 8
  bits by dropping the low byte (v >> 8) instead.
- 32-bit integer grayscale ('I': integer TIFFs, and 16-bit PNGs as older Pillow opens them): the mode
  does not say the range, so the data decide: values in 0..255 are read as 8-bit, values in 0..65535
  (some above 255) as 16-bit (v >> 8); other values are skipped with the range found. (A 16-bit image
  whose values all lie below 256, nearly black, is thus read as 8-bit.)
- 32-bit float grayscale ('F', e.g. float TIFFs): `convert('RGB')` reads 0.0..1.0 as 0..1 of 255 (a
  black image). Values in [0, 1] are scaled to 8 bits (rounded v * 255); other float images are
  skipped with the range found.
- EXIF orientation is applied (the photo as it is meant to be seen, and as `e4e-jax align` and the face
  detector see it); the official transform ignores it, so a photo with an orientation tag other than 1
  is read turned where the official code reads it as stored. `exif_transpose=False` gives the official
  pixels.

Bad files (unreadable, corrupt, truncated, empty, too small, too large) come back as `Skipped`
rather than raising, so one bad file never stops a batch. `scan_images` also reports the folder
entries that look like images but cannot be read as one (a folder named `x.png`, a broken symbolic
link or a link loop, a name with a line break, which the one-path-per-line `files.txt` cannot hold). Truncated files are never half-loaded:
this module relies on PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` being False and refuses to run if
another module switched it on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from e4e_jax import domains, images

# Extensions read (case-insensitive). The official list is jpg/jpeg/png/ppm/bmp/tiff with fixed
# case; we accept every case and add webp/tif.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"})

# (height, width) fed to the encoder, per domain (official transforms_config/data_configs:
# EncodeTransforms for ffhq/celeba/horse/church/cats, CarsEncodeTransforms for cars).
PRESETS: dict[str, tuple[int, int]] = {
    "ffhq": (256, 256),
    "celeba_hq": (256, 256),
    "horse": (256, 256),
    "church": (256, 256),
    "cats": (256, 256),
    "cars": domains.CARS_INPUT_HW,
}

DEFAULT_MIN_SIZE = 8
# PIL's own decompression-bomb threshold (it warns above it and refuses above twice it).
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_INT32_MODE = "I"
_FLOAT_MODE = "F"
# Whether images are turned as their EXIF orientation says (see the module doc): one rule for every reader.
APPLY_EXIF_ORIENTATION = True
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # the ones that swap width and height
_LINE_BREAKS = ("\n", "\r")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why (a sentence naming the problem)."""

    path: Path
    reason: str


def resolve_size(size_hw: tuple[int, int] | str) -> tuple[int, int]:
    """A (height, width) pair, or the name of a preset in `PRESETS`."""
    if isinstance(size_hw, str):
        if size_hw not in PRESETS:
            raise ValueError(
                f"unknown image size preset {size_hw!r}; use one of {sorted(PRESETS)} or an explicit (height, width)"
            )
        return PRESETS[size_hw]
    h, w = (int(v) for v in size_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive (height, width), got {size_hw!r}")
    return h, w


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in `folder`, sorted by their path relative to it (as the official
    `sorted(make_dataset(root))`). Only the extension is checked here; contents are checked on load.
    `scan_images` also returns the entries that cannot be used, with the reason."""
    return scan_images(folder, recursive)[0]


def scan_images(folder: str | os.PathLike, recursive: bool = False) -> tuple[list[Path], list[Skipped]]:
    """(image files, unusable entries) of `folder`, both sorted as `list_images` sorts.

    An entry with an image extension is unusable (a `Skipped` with the reason) if it is a folder (unless
    `recursive`, which reads it as a sub-folder), a broken symbolic link or a link loop, not a regular
    file, or if its path holds a line break. Raises NotADirectoryError if `folder` is not a folder,
    PermissionError if it cannot be listed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} does not exist or is not a directory")
    candidates = root.rglob("*") if recursive else root.iterdir()
    found: list[Path] = []
    skipped: list[Skipped] = []
    for p in candidates:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if recursive and p.is_dir() and not p.is_symlink():
            continue  # a sub-folder named like an image: rglob reads it
        reason = _unusable(p, recursive)
        if reason is None:
            found.append(p)
        else:
            skipped.append(Skipped(p, reason))
    key = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return sorted(found, key=key), sorted(skipped, key=lambda s: key(s.path))


def _unusable(p: Path, recursive: bool) -> str | None:
    """Why the listed entry `p` cannot be read as an image file; None if it can."""
    if any(c in str(p) for c in _LINE_BREAKS):
        return "the path contains a line break, which files.txt (one path per line) cannot hold; rename the file"
    try:
        str(p).encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system's encoding could not decode (surrogate escapes)
        return "the path is not valid UTF-8, which files.txt (UTF-8 text) cannot hold; rename the file"
    if p.is_symlink() and not p.exists():
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "symbolic link loop (following the link leads back to it)"
            return f"broken symbolic link (its target {os.readlink(p)} does not exist)"
    if p.is_dir():
        return "a folder, not an image file" + ("" if recursive else " (pass --recursive to read the images in it)")
    if not p.is_file():
        return "not a regular file"
    return None


def _to_rgb(img: Image.Image) -> Image.Image | str:
    """`img.convert('RGB')` as the official code does, except for 16-bit, 32-bit integer and float
    grayscale (see module doc); a reason (str) for values outside the ranges read."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return _gray8(np.asarray(img).astype(np.int64) >> 8)
    if img.mode == _INT32_MODE:
        a = np.asarray(img, dtype=np.int64)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            return (
                f"32-bit integer image with pixel values in [{lo}, {hi}]; only 0..255 (8-bit) and 0..65535 "
                "(16-bit) are read (save it as 8 or 16-bit)"
            )
        return _gray8(a if hi <= 255 else a >> 8)
    if img.mode == _FLOAT_MODE:
        a = np.asarray(img, dtype=np.float32)
        if not np.isfinite(a).all():
            return "float image holds NaN or Inf pixel values"
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            return (
                f"float image with pixel values in [{lo:g}, {hi:g}]; only float images in [0, 1] are read "
                "(save it as 8-bit or scale it to [0, 1])"
            )
        return _gray8(np.rint(a * 255.0))
    return img.convert("RGB")


def _gray8(values: np.ndarray) -> Image.Image:
    """(H, W) values in 0..255 -> an RGB image of three equal channels."""
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")  # (H, W) uint8 -> 'L'


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag of `img` (1, upright, when absent or unreadable)."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block does not make the pixels unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says (itself when upright)."""
    return ImageOps.exif_transpose(img) if orientation(img) != 1 else img


def _decode_rgb(
    path: Path,
    size_hw: tuple[int, int],
    exif_transpose: bool,
    min_size: int,
    max_pixels: int,
    fast_decode: bool = False,
) -> np.ndarray | Skipped:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (some module switched it "
            "on); e4e_jax refuses to half-load truncated images. Set it back to False."
        )
    try:
        if path.stat().st_size == 0:
            return Skipped(path, "empty file (0 bytes)")
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                return Skipped(
                    path,
                    f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} (possible decompression bomb)",
                )
            if w < min_size or h < min_size:
                return Skipped(path, f"image is {w}x{h} px, smaller than the minimum {min_size}x{min_size}")
            if fast_decode:
                # JPEG only (other formats ignore it): decode at 1/2, 1/4 or 1/8 scale in the DCT domain,
                # the largest reduction that stays >= the target size (as stored: a turned photo's width
                # becomes its height); the resize below then does less.
                turned = exif_transpose and orientation(img) in _TRANSPOSED_ORIENTATIONS
                img.draft("RGB", (size_hw[0], size_hw[1]) if turned else (size_hw[1], size_hw[0]))
            img.load()  # decode fully here, so truncation and corrupt data raise inside the try
            if exif_transpose:
                img = upright(img)
            rgb = _to_rgb(img)
            if isinstance(rgb, str):
                return Skipped(path, rgb)
    except Image.DecompressionBombError as e:
        return Skipped(path, f"decompression bomb refused by PIL: {e}")
    except Image.UnidentifiedImageError:
        return Skipped(path, "not a readable image (PIL cannot identify the file format)")
    except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file, say why
        return Skipped(path, f"cannot decode image: {type(e).__name__}: {e}")
    th, tw = size_hw
    if rgb.size != (tw, th):
        rgb = rgb.resize((tw, th), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] exactly as the official ToTensor + Normalize(0.5, 0.5) (the
    same IEEE operations as `inversion.normalize_input` on the device)."""
    return images.normalize(pixels)


def _decode(
    path: Path,
    size_hw: tuple[int, int],
    exif_transpose: bool,
    min_size: int,
    max_pixels: int,
    fast_decode: bool = False,
) -> np.ndarray | Skipped:
    rgb = _decode_rgb(path, size_hw, exif_transpose, min_size, max_pixels, fast_decode)
    return rgb if isinstance(rgb, Skipped) else normalize(rgb)


def load_image(
    path: str | os.PathLike,
    size_hw: tuple[int, int] | str,
    exif_transpose: bool = APPLY_EXIF_ORIENTATION,
    min_size: int = DEFAULT_MIN_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fast_decode: bool = False,
) -> np.ndarray | Skipped:
    """Load and preprocess one image as the official e4e inference transform does.

    Args:
      path: image file.
      size_hw: target (height, width) or a `PRESETS` name.
      exif_transpose: apply the EXIF orientation first (the default, `APPLY_EXIF_ORIENTATION`; the
        official code does not: pass False for its pixels).
      min_size: images narrower or shorter than this are skipped.
      max_pixels: images with more pixels than this are skipped (decompression bombs).
      fast_decode: decode JPEGs at a reduced scale first (PIL `draft`); faster, but not the official
        pixels (the drift is measured in BUILD_NOTES.md), so never the default.
    Returns:
      float32 (H, W, 3) in [-1, 1], or `Skipped(path, reason)` for a file that cannot be used.
    """
    return _decode(Path(path), resolve_size(size_hw), exif_transpose, min_size, max_pixels, fast_decode)


def load_pixels(
    path: str | os.PathLike,
    size_hw: tuple[int, int] | str,
    exif_transpose: bool = APPLY_EXIF_ORIENTATION,
    min_size: int = DEFAULT_MIN_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fast_decode: bool = False,
) -> np.ndarray | Skipped:
    """As `load_image`, but the resized (H, W, 3) uint8 pixels before the official normalisation
    (`normalize` gives `load_image`'s result): a quarter of the bytes to move between processes."""
    return _decode_rgb(Path(path), resolve_size(size_hw), exif_transpose, min_size, max_pixels, fast_decode)


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def iter_batches(
    paths: Sequence,
    batch_size: int,
    size_hw: tuple[int, int] | str,
    num_workers: int | None = None,
    load: Callable[[Any], np.ndarray | Skipped] | None = None,
    **load_kwargs,
) -> Iterator[tuple[np.ndarray, list, list[Skipped]]]:
    """Decode `paths` in a thread pool (PIL releases the GIL) and group them into batches.

    Yields (images float32 (b, H, W, 3), their paths, files skipped since the previous batch).
    Batches hold `batch_size` good images except the last; order follows `paths` whatever the
    thread timing. If the files after the last full batch are all bad, a final batch with
    b = 0 carries their `Skipped` records, so every input is accounted for exactly once.
    `load_kwargs` go to `load_image` (exif_transpose, min_size, max_pixels). With `load`, the items
    of `paths` may be anything: `load(item)` gives each one's image (float32 (H, W, 3)) or Skipped, and
    the items come back as they are (e.g. the rows of a manifest, where one file may appear twice).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size_hw = resolve_size(size_hw)
    paths = list(paths) if load is not None else [Path(p) for p in paths]
    workers = _default_workers() if num_workers is None else int(num_workers)
    if load is None:

        def load(p: Path) -> np.ndarray | Skipped:
            return load_image(p, size_hw, **load_kwargs)

    def results() -> Iterator[tuple[Any, np.ndarray | Skipped]]:
        if workers <= 0:
            for p in paths:
                yield p, load(p)
            return
        window = max(2 * batch_size, 2 * workers)  # bounded read-ahead keeps memory flat
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="e4e-read") as pool:
            pending: collections.deque[tuple[Any, concurrent.futures.Future]] = collections.deque()
            it = iter(paths)
            for p in it:
                pending.append((p, pool.submit(load, p)))
                if len(pending) >= window:
                    break
            while pending:
                p, fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(load, nxt)))
                yield p, fut.result()

    h, w = size_hw
    images: list[np.ndarray] = []
    good: list = []
    skipped: list[Skipped] = []
    for p, r in results():
        if isinstance(r, Skipped):
            skipped.append(r)
            continue
        images.append(r)
        good.append(p)
        if len(images) == batch_size:
            yield np.stack(images), good, skipped
            images, good, skipped = [], [], []
    if images or skipped:
        batch = np.stack(images) if images else np.zeros((0, h, w, 3), np.float32)
        yield batch, good, skipped
