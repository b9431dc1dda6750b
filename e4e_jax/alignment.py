"""FFHQ face alignment for real photos (the `align` extra: dlib-bin + face-recognition-models).

Encoders trained on FFHQ expect FFHQ-aligned crops. This module finds faces (dlib's HOG frontal
detector), fits the 68 landmarks, and cuts the FFHQ crop: the recipe of NVIDIA's ffhq-dataset
`recreate_aligned_images`, which the official e4e `utils/alignment.py` reuses. The crop itself is
e4e_jax/ffhq_crop.py (the recipe, and where its implementation differs from the official one).

Where we differ from the official code in finding faces (none of it moves the crop):
- no face is a result (`NoFaceFound`), not an `UnboundLocalError`; every face can be returned,
  largest first (the official keeps the last one dlib lists);
- the landmark model is loaded once per `Aligner` (the official reloads it, and the detector, for
  every image: about 2 s each);
- detection runs on a copy whose longer side is at most `detect_size` (default 640 px), and on the
  full image only when nothing is found there; the landmarks are always fitted on the
  full-resolution image. HOG detection costs in proportion to the pixels (0.66 s for a 1024² photo
  on one core, 0.27 s at 640); the eye centres move by about 1% of the eye distance between the
  two (BUILD_NOTES.md, "Face alignment");
- EXIF orientation is applied (the HOG detector finds upright faces only); 16-bit and 32-bit integer
  grayscale are scaled, not clipped (both as `e4e_jax.data.folder`, the one rule of every reader).

Library use (what `invert --align` and `e4e-jax align` call):

    aligner = Aligner(output_size=1024)              # landmarks=None: the installed 68-point model
    faces = aligner.align("photo.jpg")               # list[AlignedFace], largest face first
    faces[0].image                                   # uint8 (1024, 1024, 3)
    # NoFaceFound / UnreadableImage (both AlignmentSkip, with .reason) for files without a usable face
    result = aligner.align_or_skip(path)             # list[AlignedFace] | folder.Skipped

An `Aligner` pickles as its settings only; the dlib models load on first use in whichever process
(or thread) uses it, once. For a process pool, `worker_init(settings)` as the initializer and
`worker_align(path, max_faces)` as the task keep one `Aligner` per worker process (a pool of
`e4e_jax.worker_pool`, whose workers end with the process that made them):

    with worker_pool.process_pool(n, worker_init, (aligner.settings,)) as pool:
        pool.submit(worker_align, path, 1)           # -> list[AlignedFace] | folder.Skipped

One `Aligner` per thread: dlib's detector and predictor objects are not documented thread-safe.
Coordinates (boxes, landmarks, quads) are in pixels of the EXIF-oriented input image, x right,
y down, pixel centres at integers (dlib's convention).

Licence: the 68-point model (face-recognition-models) was trained on iBUG 300-W, whose terms exclude
commercial use; dlib itself (Boost licence) and its HOG detector carry no such restriction.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from e4e_jax.data import folder
from e4e_jax.errors import UserError, install_hint
from e4e_jax.ffhq_crop import N_LANDMARKS, align_crop, ffhq_quad

DETECT_UPSAMPLE = 1  # the recipe's dlib detector(img, 1): faces down to ~40 px

# ----------------------------------------------------------------------------- our settings
DEFAULT_OUTPUT_SIZE = 1024
# Largest crop side accepted (`align --output-size`, `invert --align-size`): the FFHQ recipe's own
# transform size, 4x its 1024 output. A worker peaks at ~0.35 GB there on a 1024² photo; the memory
# grows with the square of the size (100000 took a worker past 23 GB).
MAX_OUTPUT_SIZE = 4096
DEFAULT_DETECT_SIZE = 640  # longer side of the detection copy (None / 0: full resolution)
PROBE_SIZE = 64  # blank image the landmark model is tried on, to count its points
MIN_QUAD_SIZE = 8.0  # a face smaller than this (px) cannot make a crop
LANDMARKS_68_FILE = "shape_predictor_68_face_landmarks.dat"
FACE_MODELS_PACKAGE = "face_recognition_models"


# ----------------------------------------------------------------------------- results and errors
class AlignmentUnavailable(UserError):
    """dlib or the landmark model is missing or unusable (a setup problem: exit status 2)."""


class AlignmentSkip(Exception):
    """A file that yields no aligned face; `reason` is one sentence for skipped.txt."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NoFaceFound(AlignmentSkip):
    """The detector found no face (or none large enough to crop)."""


class UnreadableImage(AlignmentSkip):
    """The file is not a readable image (or is empty, too small, too large)."""


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """One aligned face.

    image: uint8 (output_size, output_size, 3), the FFHQ crop.
    face_index: 0 for the largest face of the image, 1 for the next, ... (by detection box area).
    box: (left, top, right, bottom) of the detection, inclusive pixel indices of the input.
    landmarks: float64 (68, 2), (x, y) in input pixels.
    quad: float64 (4, 2), the crop's corners in input pixels: top-left, bottom-left, bottom-right,
      top-right of the output.
    source_size: (width, height) of the (EXIF-oriented) input.
    """

    image: np.ndarray
    face_index: int
    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    quad: np.ndarray
    source_size: tuple[int, int]

    def record(self) -> dict[str, Any]:
        """JSON-ready metadata (everything but the image)."""
        return {
            "face_index": self.face_index,
            "box": list(self.box),
            "landmarks": np.round(self.landmarks, 3).tolist(),
            "quad": np.round(self.quad, 3).tolist(),
        }


# ----------------------------------------------------------------------------- reading photos
def read_rgb(
    path: str | os.PathLike, min_size: int = folder.DEFAULT_MIN_SIZE, max_pixels: int = folder.DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The photo at `path` as an RGB PIL image at full resolution, EXIF orientation applied.

    Raises UnreadableImage (with the reason) for an empty, corrupt, truncated, too small or too
    large file, with the checks and wording of `e4e_jax.data.folder`."""
    path = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (some module switched it on); "
            "e4e_jax refuses to half-load truncated images. Set it back to False."
        )
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file (0 bytes)")
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise UnreadableImage(
                    f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} (possible decompression bomb)"
                )
            if w < min_size or h < min_size:
                raise UnreadableImage(f"image is {w}x{h} px, smaller than the minimum {min_size}x{min_size}")
            img.load()
            return folder._to_rgb(folder.upright(img))
    except AlignmentSkip:
        raise
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"decompression bomb refused by PIL: {e}") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not a readable image (PIL cannot identify the file format)") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file, say why
        raise UnreadableImage(f"cannot decode image: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------- dlib
def _import_dlib():
    try:
        import dlib  # the `align` extra; nothing else in e4e_jax imports it
    except ImportError as e:
        raise AlignmentUnavailable(
            f"face alignment needs dlib: {install_hint('align')} (dlib-bin, face-recognition-models)"
        ) from e
    return dlib


def default_landmarks_file() -> Path:
    """The 68-point model shipped in face-recognition-models (found without importing the package,
    whose __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec(FACE_MODELS_PACKAGE)
    if spec is not None:
        for loc in spec.submodule_search_locations or ():
            p = Path(loc) / "models" / LANDMARKS_68_FILE
            if p.is_file():
                return p
    raise AlignmentUnavailable(
        f"the 68-point landmark model ({LANDMARKS_68_FILE}) is not installed: "
        f"{install_hint('align')} (face-recognition-models), or pass --landmarks FILE"
    )


@dataclasses.dataclass(frozen=True)
class AlignerSettings:
    """Everything an `Aligner` is made from (picklable; the models load where it is used)."""

    output_size: int = DEFAULT_OUTPUT_SIZE
    landmarks: str | None = None
    detect_size: int | None = DEFAULT_DETECT_SIZE


def settings_record(settings: AlignerSettings) -> dict[str, Any]:
    """JSON-ready form of the settings (what an output records so that its crops can be re-made)."""
    return dataclasses.asdict(settings)


def settings_from_record(record: Any, source: str) -> AlignerSettings:
    """`settings_record`'s dict back as settings; UserError naming `source` for anything else."""
    fields = {f.name for f in dataclasses.fields(AlignerSettings)}
    if not isinstance(record, dict) or set(record) != fields:
        raise UserError(
            f"{source}: the alignment record {record!r} is not one of {sorted(fields)}; the file is damaged"
        )
    try:
        return Aligner(record["output_size"], record["landmarks"], record["detect_size"]).settings
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: the alignment record {record!r} is invalid ({e}); the file is damaged") from e


def resize_for_encoder(crop: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An aligned crop (uint8 (S, S, 3)) at the encoder's input size: PIL bilinear, as the official
    transform resizes any input (the crop as it is when it already has that size). uint8 (h, w, 3)."""
    h, w = hw
    if crop.shape[:2] == (h, w):
        return crop
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), np.uint8)


class Aligner:
    """Detect faces, fit 68 landmarks, cut FFHQ crops (see the module docstring).

    output_size: side of the aligned images (px).
    landmarks: dlib 68-point shape-predictor file; None: the one in face-recognition-models.
    detect_size: detect on a copy whose longer side is at most this (px), then on the full image if
      nothing is found; None or 0: always at full resolution (as the official code; slower, finds
      faces down to ~40 px).
    """

    def __init__(
        self,
        output_size: int = DEFAULT_OUTPUT_SIZE,
        landmarks: str | os.PathLike | None = None,
        detect_size: int | None = DEFAULT_DETECT_SIZE,
    ):
        if not 1 <= int(output_size) <= MAX_OUTPUT_SIZE:
            raise ValueError(f"output_size must be in [1, {MAX_OUTPUT_SIZE}], got {output_size}")
        self.settings = AlignerSettings(
            int(output_size), None if landmarks is None else str(landmarks), int(detect_size) if detect_size else None
        )
        self._detector = None
        self._predictor = None

    @classmethod
    def from_settings(cls, settings: AlignerSettings) -> "Aligner":
        return cls(settings.output_size, settings.landmarks, settings.detect_size)

    @property
    def output_size(self) -> int:
        return self.settings.output_size

    def __getstate__(self):
        return {"settings": self.settings}

    def __setstate__(self, state):
        self.settings, self._detector, self._predictor = state["settings"], None, None

    def check(self, load_landmarks: bool = True) -> Path:
        """Raise AlignmentUnavailable (a UserError) if dlib or the landmark model is missing, or
        (load_landmarks) if the file is not a 68-point model; return the model's path. Cheap
        without load_landmarks; loading the model takes about a second."""
        dlib = _import_dlib()
        path = Path(self.settings.landmarks) if self.settings.landmarks else default_landmarks_file()
        if not path.is_file():
            raise AlignmentUnavailable(f"the landmark model {path} does not exist")
        if load_landmarks and self._predictor is None:
            try:
                predictor = dlib.shape_predictor(str(path))
            except RuntimeError as e:
                raise AlignmentUnavailable(f"{path} is not a dlib shape-predictor file ({e})") from None
            # The predictor does not say how many points it fits: ask it on a blank image.
            n_parts = predictor(
                np.zeros((PROBE_SIZE, PROBE_SIZE, 3), np.uint8), dlib.rectangle(0, 0, PROBE_SIZE - 1, PROBE_SIZE - 1)
            ).num_parts
            if n_parts != N_LANDMARKS:
                raise AlignmentUnavailable(
                    f"{path} predicts {n_parts} landmarks; the FFHQ crop needs "
                    f"the {N_LANDMARKS}-point model (eye contours and mouth corners)"
                )
            self._predictor = predictor
        return path

    def load(self) -> "Aligner":
        """Load dlib's detector and the landmark model now (else on first use); see `check`."""
        if self._detector is None:
            self.check(load_landmarks=True)
            self._detector = _import_dlib().get_frontal_face_detector()
        return self

    # -- steps, each usable alone -------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes (left, top, right, bottom; inclusive, full-resolution pixels) in uint8
        (H, W, 3), largest first."""
        self.load()
        h, w = rgb.shape[:2]
        limit = self.settings.detect_size
        boxes: list[tuple[int, int, int, int]] = []
        if limit and max(h, w) > limit:
            f = limit / max(h, w)
            sw, sh = max(1, round(w * f)), max(1, round(h * f))
            small = np.asarray(Image.fromarray(rgb).resize((sw, sh), Image.BILINEAR))
            sx, sy = w / sw, h / sh
            # A box covers pixels [left, right + 1) of the copy, i.e. [left sx, (right + 1) sx) here.
            boxes = [
                (
                    round(r.left() * sx),
                    round(r.top() * sy),
                    round((r.right() + 1) * sx) - 1,
                    round((r.bottom() + 1) * sy) - 1,
                )
                for r in self._detector(small, DETECT_UPSAMPLE)
            ]
        if not boxes:
            boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in self._detector(rgb, DETECT_UPSAMPLE)]
        return sorted(boxes, key=lambda b: (-(b[2] - b[0] + 1) * (b[3] - b[1] + 1), b[1], b[0]))

    def landmarks_in(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """68 landmarks float64 (68, 2) fitted in `box` of the full-resolution uint8 (H, W, 3)."""
        import dlib

        self.load()
        shape = self._predictor(rgb, dlib.rectangle(*box))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    # -- the whole thing ----------------------------------------------------------------------
    def align(
        self, source: str | os.PathLike | Image.Image | np.ndarray, max_faces: int | None = None
    ) -> list[AlignedFace]:
        """Aligned faces of a photo (path, PIL image or uint8 (H, W, 3)), largest first; at most
        `max_faces` (None: all). Raises UnreadableImage for a bad file, NoFaceFound if none."""
        img = read_rgb(source) if isinstance(source, (str, os.PathLike)) else source
        if isinstance(img, Image.Image):
            img = folder._to_rgb(img)
            rgb = np.asarray(img)
        else:
            rgb = np.ascontiguousarray(img, np.uint8)
            if rgb.ndim != 3 or rgb.shape[-1] != 3:
                raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
            img = Image.fromarray(rgb)
        boxes = self.detect(rgb)
        faces: list[AlignedFace] = []
        for box in boxes:
            if max_faces is not None and len(faces) >= max_faces:
                break
            lm = self.landmarks_in(rgb, box)
            quad, qsize = ffhq_quad(lm)
            if qsize < MIN_QUAD_SIZE:
                continue
            try:
                crop = align_crop(img, quad, qsize, self.output_size)
            except ValueError:
                continue  # landmarks extrapolated off the image: no crop
            faces.append(AlignedFace(crop, len(faces), box, lm, quad, (rgb.shape[1], rgb.shape[0])))
        if not faces:
            raise NoFaceFound(
                "no face found" if not boxes else f"no face found large enough to crop ({len(boxes)} detected)"
            )
        return faces

    def align_or_skip(
        self, path: str | os.PathLike, max_faces: int | None = None
    ) -> list[AlignedFace] | folder.Skipped:
        """`align(path)`, with a file that yields no face returned as `folder.Skipped(path, reason)`
        ("no face found", "not a readable image ...", ...). Any other failure on this one file is a
        Skipped too ("alignment failed: <error>"), so that one bad photo never stops a batch."""
        try:
            return self.align(path, max_faces)
        except AlignmentSkip as e:
            return folder.Skipped(Path(path), e.reason)
        except AlignmentUnavailable:
            raise  # a setup problem, not this file's
        except Exception as e:  # noqa: BLE001
            return folder.Skipped(Path(path), f"alignment failed: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- process pools
_WORKER: Aligner | None = None


def worker_init(settings: AlignerSettings) -> None:
    """Process-pool initializer: one Aligner per worker process, models loaded once, here."""
    global _WORKER
    _WORKER = Aligner.from_settings(settings).load()


def worker_align(path: str | os.PathLike, max_faces: int | None = None) -> list[AlignedFace] | folder.Skipped:
    """Process-pool task: `Aligner.align_or_skip(path, max_faces)` with the worker's Aligner."""
    if _WORKER is None:
        raise RuntimeError("worker_align called in a process without worker_init")
    return _WORKER.align_or_skip(path, max_faces)
