"""`invert --align`'s decode step: FFHQ-align the faces of a photo, then the encoder's official resize.

Runs in the decoder processes (pipeline.py); one `alignment.Aligner` per process, its models loaded
on first use. Needs the `align` extra; `job._check_args` checks it before any work.
"""

from __future__ import annotations

from typing import Optional

_ALIGNERS: dict = {}


def _aligner(output_size: int, landmarks: Optional[str]):
    from e4e_jax.inference import alignment

    key = (output_size, landmarks)
    if key not in _ALIGNERS:
        _ALIGNERS[key] = alignment.Aligner(output_size, landmarks).load()
    return _ALIGNERS[key]


def prepare(path: str, input_hw: tuple[int, int], output_size: int, faces: str, landmarks: Optional[str]):
    """path -> [(face index, (H, W, 3) uint8)] (largest face first; only it for faces='largest'), or a
    `folder.Skipped` ("no face found", unreadable file, ...). The aligned crop is resized to the encoder
    input with PIL bilinear, as the official transform resizes any input."""
    from e4e_jax.inference.alignment import resize_for_encoder

    found = _aligner(output_size, landmarks).align_or_skip(path, 1 if faces == "largest" else None)
    if not isinstance(found, list):
        return found
    return [(face.face_index, resize_for_encoder(face.image, input_hw)) for face in found]
