"""The FFHQ crop: from a face's 68 landmarks to the aligned image (numpy + PIL; no dlib).

The recipe of NVIDIA's ffhq-dataset `recreate_aligned_images`, which the official e4e
`utils/alignment.py` reuses, written from its published facts:

    eye centres = means of landmarks 36-41 and 42-47, mouth corners = 48 and 54;
    x = eye_to_eye - rot90(eye_to_mouth), scaled to max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|),
    y = rot90(x), centre c = eye_avg + 0.1 eye_to_mouth, quad = c -x -y, c -x +y, c +x +y, c +x -y,
    qsize = 2 |x|;
    shrink by floor(qsize / output * 0.5) when > 1 (antialiased); crop to the quad's box + a border
    of max(rint(0.1 qsize), 3); where the quad leaves the image, reflect-pad by at least
    rint(0.3 qsize) and fade the padding into a Gaussian blur (sigma 0.02 qsize) and then into the
    image's median colour; sample the quad (PIL QUAD, bilinear) and resize to the output (Lanczos).

Where we differ from the official code (none of it moves the crop):
- the padding blur is computed on a box-reduced copy (its result is a Gaussian of sigma 0.02 qsize,
  smooth at that scale) and interpolated back, and both fades are 8-bit alpha composites: at most
  2 grey levels (mean 0.1-0.3) from the official float32 full-resolution `gaussian_filter`
  pipeline, 10-40x faster on the crops of 1024² outputs (the official step takes seconds: a
  4-sigma kernel of up to 650 taps per pixel, on the whole padded image);
- the quad is sampled at the source's own resolution (at least the output's, at most FFHQ's 4x),
  then Lanczos-resized: alias-free like FFHQ's fixed 4096² pass, at a fraction of its cost (the
  official e4e samples at the output size, 256, which aliases);
- shrink and crop are one antialiased resize of the crop region only, and coordinates are mapped
  pixel-centre to pixel-centre (the recipe divides pixel indices by the factor: a half-pixel shift).

Finding the faces and their landmarks is e4e_jax/inference/alignment.py's. Coordinates (landmarks, quads) are
in pixels of the input image, x right, y down, pixel centres at integers (dlib's convention).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- recipe constants
EYE_LEFT = slice(36, 42)  # 68-point indices of the (image-)left eye
EYE_RIGHT = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54  # outer mouth corners
N_LANDMARKS = 68
EYE_TO_EYE_SCALE = 2.0  # half crop width >= 2.0 x eye distance ...
EYE_TO_MOUTH_SCALE = 1.8  # ... and >= 1.8 x eye-to-mouth distance
CENTRE_TOWARDS_MOUTH = 0.1  # crop centre = eye midpoint + 0.1 eye-to-mouth
SHRINK_RATIO = 0.5  # shrink by floor(qsize / output * 0.5) when that is > 1
BORDER_FRACTION = 0.1  # crop border = max(rint(0.1 qsize), MIN_BORDER)
MIN_BORDER = 3
PAD_SLACK = 4  # pad only if the quad comes closer than 4 px to the edge
PAD_FRACTION = 0.3  # padding on every side >= rint(0.3 qsize)
BLUR_FRACTION = 0.02  # padding blur sigma = 0.02 qsize
BLUR_RAMP_GAIN = 3.0  # blur weight = clip(3 mask + 1, 0, 1); median weight = clip(mask)
FFHQ_SUPERSAMPLE = 4  # FFHQ samples the quad at 4096² for its 1024² output
GAUSS_TRUNCATE = 4.0  # Gaussian kernel cut at 4 sigma (scipy.ndimage's default)

# Blur in a copy reduced so that sigma is about 3 of its pixels: a Gaussian that wide varies
# little between samples k pixels apart, so box-reducing before and bilinear interpolation after
# stay below one grey level of the full-resolution filter (tests/test_alignment.py).
LOWRES_BLUR_SIGMA = 3.0


# ----------------------------------------------------------------------------- the geometry
def eye_and_mouth_points(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(left eye centre, right eye centre, left mouth corner, right mouth corner), each (2,), from
    68 landmarks (68, 2)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (N_LANDMARKS, 2):
        raise ValueError(f"expected ({N_LANDMARKS}, 2) landmarks, got {lm.shape}")
    return lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[MOUTH_LEFT], lm[MOUTH_RIGHT]


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop for 68 landmarks (68, 2): quad float64 (4, 2) (top-left, bottom-left,
    bottom-right, top-right of the output, in input pixels) and its side length qsize."""
    eye_l, eye_r, mouth_l, mouth_r = eye_and_mouth_points(landmarks)
    eye_avg = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not norm > 0:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / norm * max(np.hypot(*eye_to_eye) * EYE_TO_EYE_SCALE, np.hypot(*eye_to_mouth) * EYE_TO_MOUTH_SCALE)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * CENTRE_TOWARDS_MOUTH
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def to_output_coords(points: np.ndarray, quad: np.ndarray, output_size: int) -> np.ndarray:
    """Where input points (..., 2) land in the aligned output (pixel indices): the inverse of the
    quad map, exact for the recipe's quads (squares)."""
    p = np.asarray(points, np.float64)
    origin, ex, ey = quad[0], quad[3] - quad[0], quad[1] - quad[0]  # output x runs along top edge
    d = p - origin
    s = d @ ex / (ex @ ex)
    t = d @ ey / (ey @ ey)
    # continuous output coordinate u = size * s, pixel index = u - 0.5 (PIL pixel centres at +0.5;
    # the recipe's quad is in index coordinates and handed to PIL as quad + 0.5).
    return np.stack([s, t], -1) * output_size - 0.5


def transform_size(qsize: float, output_size: int) -> int:
    """Side of the square the quad is sampled at before the final Lanczos resize: one sample per
    source pixel (alias-free), at least the output, at most FFHQ's 4x."""
    return int(min(max(output_size, math.ceil(qsize)), FFHQ_SUPERSAMPLE * output_size))


def _box_of(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(quad[:, 0].min())),
        int(np.floor(quad[:, 1].min())),
        int(np.ceil(quad[:, 0].max())),
        int(np.ceil(quad[:, 1].max())),
    )


def align_crop(image: Image.Image | np.ndarray, quad: np.ndarray, qsize: float, output_size: int) -> np.ndarray:
    """The FFHQ crop of `quad` (4, 2) (side `qsize`, input pixels) from an RGB image (PIL or uint8
    (H, W, 3)): uint8 (output_size, output_size, 3)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image, np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    quad = np.asarray(quad, np.float64).copy()
    w, h = img.size
    # Shrink (antialiased) by an integer factor when the quad is at least 4x the output: the recipe
    # resizes the whole image; we resize only the crop region, same filter, pixel-centre geometry.
    shrink = int(np.floor(qsize / output_size * SHRINK_RATIO))
    if shrink > 1:
        rw, rh = int(np.rint(w / shrink)), int(np.rint(h / shrink))
        scale = np.array([w / rw, h / rh])
        quad = (quad + 0.5) / scale - 0.5
        qsize /= shrink
    else:
        rw, rh, scale = w, h, None
    border = max(int(np.rint(qsize * BORDER_FRACTION)), MIN_BORDER)
    x0, y0, x1, y1 = _box_of(quad)
    x0, y0, x1, y1 = max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, rw), min(y1 + border, rh)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the face's crop lies outside the image")
    if scale is not None:
        region = img.resize(
            (x1 - x0, y1 - y0), Image.LANCZOS, box=(x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1])
        )
    elif (x0, y0, x1, y1) != (0, 0, w, h):
        region = img.crop((x0, y0, x1, y1))
    else:
        region = img
    quad -= (x0, y0)
    cw, ch = region.size
    bx0, by0, bx1, by1 = _box_of(quad)
    pad = (max(-bx0 + border, 0), max(-by0 + border, 0), max(bx1 - cw + border, 0), max(by1 - ch + border, 0))
    if max(pad) > border - PAD_SLACK:
        pad = tuple(max(p, int(np.rint(qsize * PAD_FRACTION)), 1) for p in pad)
        region = Image.fromarray(blurred_reflect_pad(np.asarray(region), pad, qsize * BLUR_FRACTION))
        quad += pad[:2]
    t = transform_size(qsize, output_size)
    out = region.transform((t, t), Image.QUAD, (quad + 0.5).flatten().tolist(), Image.BILINEAR)
    if t != output_size:
        out = out.resize((output_size, output_size), Image.LANCZOS)
    return np.asarray(out)


# ----------------------------------------------------------------------------- the padding blur
def _edge_ramp(n: int, pad_lo: int, pad_hi: int) -> np.ndarray:
    """The recipe's mask along one axis, float32 (n,): 1 at the outer edges, 0 where the padding
    meets the image, negative inside: 1 - min(i / pad_lo, (n - 1 - i) / pad_hi)."""
    i = np.arange(n, dtype=np.float32)
    return 1.0 - np.minimum(i / np.float32(pad_lo), (n - 1 - i) / np.float32(pad_hi))


def _lowres_gaussian(img: np.ndarray, sigma: float) -> tuple[np.ndarray, int]:
    """A Gaussian blur (sigma in pixels) of uint8 (h, w, 3), kept at reduced resolution:
    float32 (ceil(h / k), ceil(w / k), 3) and the factor k. Pixel j of the result stands for input
    pixels [j k, (j + 1) k)."""
    k = max(1, int(sigma / LOWRES_BLUR_SIGMA))
    small = Image.fromarray(img).reduce(k) if k > 1 else Image.fromarray(img)  # box average
    a = np.asarray(small, np.float32)
    # Box-averaging adds variance (k² - 1) / 12 and bilinear interpolation back about k² / 6
    # (input pixels²); the low-res sigma makes up the rest.
    var = sigma * sigma - (k * k - 1) / 12.0 - (k * k / 6.0 if k > 1 else 0.0)
    s = math.sqrt(max(var, 1e-6)) / k
    from scipy.ndimage import gaussian_filter  # separable, single-threaded C

    return gaussian_filter(a, (s, s, 0), mode="reflect", truncate=GAUSS_TRUNCATE), k


def _hist_median(hist: np.ndarray) -> float:
    """Median of integer values 0..255 given their counts (256,) (mean of the two middle ones when
    the count is even, as np.median)."""
    n = int(hist.sum())
    cum = np.cumsum(hist)
    lo = int(np.searchsorted(cum, (n - 1) // 2 + 1))
    hi = int(np.searchsorted(cum, n // 2 + 1))
    return 0.5 * (lo + hi)


def blurred_reflect_pad(img: np.ndarray, pad: tuple[int, int, int, int], sigma: float) -> np.ndarray:
    """The recipe's padding: reflect-pad uint8 (h, w, 3) by pad = (left, top, right, bottom) (each
    >= 1), then towards the outer edges fade into a Gaussian blur (sigma px) and into the median
    colour of the blurred image. Returns uint8 (h + top + bottom, w + left + right, 3).

    The recipe does this in float32 over the whole padded image; here the blur is computed at low
    resolution (`_lowres_gaussian`) and both fades are 8-bit alpha composites (PIL, in C). Each
    step rounds to 8 bits once: within about one grey level of the float pipeline
    (tests/test_alignment.py)."""
    left, top, right, bottom = pad
    padded = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = padded.shape[:2]
    fx, fy = _edge_ramp(w, left, right), _edge_ramp(h, top, bottom)

    def weight(ramp_y: np.ndarray, ramp_x: np.ndarray) -> Image.Image:
        # The recipe's mask is max(x ramp, y ramp); the clip is monotonic, so clip each first.
        wy = np.rint(np.clip(ramp_y, 0.0, 1.0) * 255).astype(np.uint8)
        wx = np.rint(np.clip(ramp_x, 0.0, 1.0) * 255).astype(np.uint8)
        return Image.fromarray(np.maximum(wy[:, None], wx[None, :]), "L")

    small, k = _lowres_gaussian(padded, sigma)
    blurred = Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8))
    if k > 1:  # bilinear back to full resolution; low-res pixel j covers [j k, (j + 1) k)
        blurred = blurred.resize((w, h), Image.BILINEAR, box=(0, 0, w / k, h / k))
    out = Image.composite(
        blurred, Image.fromarray(padded), weight(fy * BLUR_RAMP_GAIN + 1.0, fx * BLUR_RAMP_GAIN + 1.0)
    )
    hist = np.asarray(out.histogram(), np.int64).reshape(3, 256)
    median = tuple(int(np.rint(_hist_median(c))) for c in hist)
    out = Image.composite(Image.new("RGB", (w, h), median), out, weight(fy, fx))
    return np.asarray(out)
