"""A straightforward reference of the FFHQ alignment recipe, step for step as the official code does
them (NVlabs ffhq-dataset `recreate_aligned_images`, reused by omertov/encoder4editing
`utils/alignment.py`), written here from the recipe's facts. The tests compare e4e_jax.inference.alignment / ffhq_crop
with it, and benchmarks/align_speed.py times it as "the official recipe".

What it keeps from the official code on purpose: the detector and the landmark model are created
for every image, the detector runs on the full-resolution image with upsample 1, the last face dlib
lists is used, the whole image is shrunk, the padding blur is scipy.ndimage.gaussian_filter on the
whole padded float32 image, and the median is np.median. Needs numpy, PIL, scipy, dlib only.
`Image.ANTIALIAS` (gone since Pillow 10) is its alias LANCZOS.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def official_landmarks(path, predictor_path: str, upsample: int = 1) -> np.ndarray | None:
    """68 landmarks (68, 2) of the last face dlib lists, models loaded afresh; None if no face."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(predictor_path)
    img = dlib.load_rgb_image(str(path))
    shape = None
    for det in detector(img, upsample):
        shape = predictor(img, det)
    if shape is None:
        return None
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def recipe_quad(lm: np.ndarray) -> tuple[np.ndarray, float]:
    lm = np.asarray(lm, np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), float(np.hypot(*x) * 2)


def recipe_pad(img: np.ndarray, pad, qsize: float) -> np.ndarray:
    """The recipe's blurred reflect padding of uint8 (h, w, 3) by pad = (left, top, right, bottom),
    in float32 over the whole padded image; uint8 result."""
    import scipy.ndimage

    a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = a.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(
        1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
        1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]),
    )
    blur = qsize * 0.02
    a += (scipy.ndimage.gaussian_filter(a, [blur, blur, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(a), 0, 255))


def recipe_crop(img: Image.Image, lm: np.ndarray, output_size: int, transform_size: int | None = None) -> Image.Image:
    """The recipe's crop of `img` (RGB PIL) for landmarks `lm`. transform_size None: FFHQ's 4x
    output (4096 for 1024); the official e4e passes output_size (256)."""
    transform_size = 4 * output_size if transform_size is None else transform_size
    quad, qsize = recipe_quad(lm)
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, img.size[0]),
        min(crop[3] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
    pad = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - img.size[0] + border, 0),
        max(pad[3] - img.size[1] + border, 0),
    )
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = Image.fromarray(recipe_pad(np.asarray(img), pad, qsize), "RGB")
        quad += pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return img


def official_align(
    path, predictor_path: str, output_size: int, transform_size: int | None = None
) -> Image.Image | None:
    """The official per-image procedure: load models, detect, fit, crop. None if no face."""
    lm = official_landmarks(path, predictor_path)
    if lm is None:
        return None
    return recipe_crop(Image.open(path).convert("RGB"), lm, output_size, transform_size)
