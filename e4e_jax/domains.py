"""The image domains of official e4e and their geometry, written once.

Official e4e trains and runs on 256x256 images, except cars: the encoder sees 192x256 (4:3) images
(CarsEncodeTransforms) and the square generator output is framed to its middle rows, 64:448 of 512
(inference) or 32:224 of the 256x256 face_pool output (training, metrics). Official cars inference
also trims 18 codes to the 16 of the 512px generator (ours: `codes[:, :n_latent]`, inversion.encode).
"""

from __future__ import annotations

from typing import Optional

DOMAINS = ("ffhq", "cars", "horse", "church", "cats")
SQUARE_INPUT_HW = (256, 256)
CARS_INPUT_HW = (192, 256)  # (H, W): 4:3
# Substrings of official --dataset_type values and their domain, in matching order.
_DATASET_DOMAINS = (
    ("ffhq", "ffhq"),
    ("celeb", "ffhq"),
    ("car", "cars"),
    ("horse", "horse"),
    ("church", "church"),
    ("cat", "cats"),
)


def domain_of(dataset_type: Optional[str]) -> Optional[str]:
    """The domain of an official dataset_type ('ffhq_encode' -> 'ffhq', 'cars_encode' -> 'cars',
    'celeba_encode' -> 'ffhq', ...); None when unknown or not a string."""
    if not isinstance(dataset_type, str):
        return None
    d = dataset_type.lower()
    for needle, name in _DATASET_DOMAINS:
        if needle in d:
            return name
    return None


def input_hw(domain: Optional[str]) -> tuple[int, int]:
    """(H, W) of the encoder input of `domain` (cars 192x256, every other 256x256)."""
    return CARS_INPUT_HW if domain == "cars" else SQUARE_INPUT_HW


def centred_rows(height: int, keep: int) -> tuple[int, int]:
    """(top, bottom) of the `keep` middle rows of an image `height` rows tall."""
    top = (height - keep) // 2
    return top, top + keep


def cars_rows(size: int) -> tuple[int, int]:
    """(top, bottom) rows of a size x size generator output that make the cars frame: its middle 3/4
    (the 192/256 of CARS_INPUT_HW), i.e. 64:448 of 512 and 32:224 of 256."""
    h, w = CARS_INPUT_HW
    return centred_rows(size, size * h // w)


def output_rows(domain: Optional[str], size: int) -> Optional[tuple[int, int]]:
    """(top, bottom) rows of a size x size output that make `domain`'s frame (cars: `cars_rows`); None
    where the whole square is kept."""
    return cars_rows(size) if domain == "cars" else None


def output_hw(domain: Optional[str], size: int) -> tuple[int, int]:
    """(H, W) of a size x size output in `domain`'s frame (cars 3:4 of the square, every other the square)."""
    rows = output_rows(domain, size)
    return (size if rows is None else rows[1] - rows[0]), size
