"""The image each latent came from, for `evaluate` (distortion against the encoder's exact input) and
`edit` (the grid's source column): the rows of an `e4e-jax invert` output or of a folder, and their pixels.

A row is one code: its file and, in an `invert --align` output (faces.txt), which face of the file. A
plain row's source is the file through the official test transform (data/folder.py). An aligned row's
source is the FFHQ crop of that face, made again here by the code invert ran (alignment.py: dlib's
detector and the landmark model, then ffhq_crop.py and `resize_for_encoder`) with the settings the run
recorded in report.json (invert's defaults, said in a note, where an output does not record them). Every
step is deterministic, so these are the pixels the encoder saw (tests/test_evaluate_aligned.py) without
invert keeping a copy of every crop; the price is the alignment's time again, and the align extra (dlib)
wherever such an output is evaluated.

Each row has a `key`, unique in the run: its file relative to the images folder, `#face{K}` for a face,
`#row{i}` for a second row of one file (a manifest that lists a file twice).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from e4e_jax.data import folder
from e4e_jax.errors import UserError
from e4e_jax.storage import manifest, outdir


@dataclasses.dataclass(frozen=True)
class Row:
    """One code: its index in latents.npy (or in the listing), its source file, the face of that file
    (0 = the largest; None: not aligned) and its unique name in reports."""

    index: int
    path: Path
    face: Optional[int]
    key: str


@dataclasses.dataclass(frozen=True)
class InvertOutput:
    """What an invert output folder says about its codes (manifest.py); latents as stored, unchecked."""

    folder: Path
    rows: list[Row]
    latents: np.ndarray
    align: Optional[object]  # alignment.AlignerSettings of an aligned output, else None
    align_note: Optional[str]  # set when the settings are invert's defaults, not read from the output


def _relative(paths: Sequence[Path], root: Optional[Path]) -> list[str]:
    """Each path relative to `root` when all lie under it, else to their deepest common folder."""
    if root is not None:
        try:
            return [p.relative_to(root).as_posix() for p in paths]
        except ValueError:
            pass
    try:
        common = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else None
    except ValueError:  # absolute and relative paths mixed
        common = None
    if common is None:
        return [p.as_posix() for p in paths]
    return [p.relative_to(common).as_posix() for p in paths]


def make_rows(paths: Sequence[str | os.PathLike], faces: Optional[Sequence[int]], root: Optional[Path]) -> list[Row]:
    """Rows of `paths` (with their face indices for an aligned output), keyed relative to `root`."""
    paths = [Path(p) for p in paths]
    keys = _relative(paths, root)
    rows, seen = [], set()
    for i, (p, key) in enumerate(zip(paths, keys)):
        face = None if faces is None else int(faces[i])
        if face is not None:
            key = f"{key}#face{face}"
        if key in seen:
            key = f"{key}#row{i}"
        seen.add(key)
        rows.append(Row(i, p, face, key))
    return rows


def _recorded_report(inv_dir: Path) -> dict:
    try:
        report = json.loads((inv_dir / manifest.REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _align_settings(inv_dir: Path, report: dict):
    """(settings, note) of an aligned output: those report.json records, else invert's defaults."""
    from e4e_jax.inference import alignment

    if manifest.ALIGN_RECORD in report:
        return alignment.settings_from_record(report[manifest.ALIGN_RECORD], str(inv_dir / manifest.REPORT)), None
    settings = alignment.Aligner().settings
    return settings, (
        f"{inv_dir / manifest.REPORT} does not record the alignment settings; the faces are re-aligned with "
        f"invert's defaults (--align-size {settings.output_size}, the installed landmark model): if the run "
        "used others, the sources differ slightly from what the encoder saw"
    )


def read_invert_output(
    inv_dir: Path, images_dir: Optional[Path], option: str, require_originals: bool = True
) -> InvertOutput:
    """The codes, their rows and the alignment settings of an `invert` output folder (named `option` in
    messages). Originals that moved are looked for under `images_dir` (at their path relative to the
    inverted folder, then by name); UserError for a folder that is not an invert output, or (with
    `require_originals`) for an original that cannot be found (else its row keeps the listed path)."""
    from e4e_jax.storage.fileio import load_npy

    if not inv_dir.is_dir():
        raise UserError(f"{option} {inv_dir} is not a folder; pass the output folder of `e4e-jax invert`")
    outdir.refuse_in_use(inv_dir, option)
    files_txt, lat_path = inv_dir / manifest.FILES, inv_dir / manifest.LATENTS
    for f in (files_txt, lat_path):
        if not f.is_file():
            raise UserError(f"{option} {inv_dir}: {f.name} is missing; pass the output folder of `e4e-jax invert`")
    listed = [Path(p) for p in manifest.read_lines(files_txt)]
    latents = load_npy(lat_path)
    if latents.ndim < 1 or latents.shape[0] != len(listed):
        raise UserError(
            f"{lat_path}: {latents.shape[0] if latents.ndim else 0} codes for {len(listed)} files in {files_txt}"
        )
    report = _recorded_report(inv_dir)
    root = Path(report["images"]) if isinstance(report.get("images"), str) else None
    rels = _relative(listed, root)
    originals = []
    for p, rel in zip(listed, rels):
        cands = [p] + ([images_dir / rel, images_dir / p.name] if images_dir is not None else [])
        found = next((c for c in cands if c.is_file()), None if require_originals else p)
        if found is None:
            raise UserError(
                f"{files_txt}: original image {p} not found; pass --images with the folder that was inverted"
            )
        originals.append(found)
    faces = manifest.read_faces(inv_dir, len(listed))
    align, note = _align_settings(inv_dir, report) if faces is not None else (None, None)
    rows = make_rows(listed, faces, root)
    rows = [dataclasses.replace(r, path=o) for r, o in zip(rows, originals)]
    return InvertOutput(inv_dir, rows, latents, align, note)


def _worker_init(settings) -> None:
    """Re-alignment worker: Ctrl-C is the parent's to handle; one Aligner, loaded once."""
    import signal

    from e4e_jax.inference import alignment

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    alignment.worker_init(settings)


class SourceLoader:
    """Loads rows' sources; thread-safe (data/folder.iter_batches calls it from its threads).

    align: the AlignerSettings of aligned rows (None: plain rows only). workers: processes that
    re-align (None: one per CPU, at most one per file; 0: in this process). Use it as a context manager.
    Each photo of an aligned output is aligned once, however many of its faces are rows.
    """

    def __init__(self, rows: Sequence[Row], align=None, workers: Optional[int] = None):
        self.align = align
        self._uses = Counter(r.path for r in rows if r.face is not None)
        self._need: dict[Path, int] = {}
        for r in rows:
            if r.face is not None:
                self._need[r.path] = max(self._need.get(r.path, 0), r.face + 1)
        n = len(self._need)
        self._workers = min(os.cpu_count() or 1, n) if workers is None else min(workers, n)
        self._lock = threading.Lock()
        self._cache: dict[Path, list] = {}
        self._pool: Optional[concurrent.futures.ProcessPoolExecutor] = None
        self._here = None

    def __enter__(self) -> "SourceLoader":
        if self.align is None or not self._need:
            return self
        from e4e_jax.inference import alignment

        try:
            alignment.Aligner.from_settings(self.align).check(load_landmarks=False)  # dlib + model present
        except UserError as e:
            raise UserError(f"the sources of an `invert --align` output are its face crops, made again: {e}") from e
        if self._workers > 1:
            import multiprocessing

            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_worker_init,
                initargs=(self.align,),
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _faces(self, path: Path):
        """The file's aligned faces (list[AlignedFace]) or a folder.Skipped; each file aligned once."""
        with self._lock:
            entry = self._cache.get(path)
            if entry is None:
                entry = self._cache[path] = [self._submit(path, self._need[path]), self._uses[path]]
            entry[1] -= 1
            if entry[1] <= 0:  # its last row: forget the faces (rows of a file are consecutive)
                del self._cache[path]
        return entry[0].result()

    def _submit(self, path: Path, max_faces: int) -> concurrent.futures.Future:
        if self._pool is not None:
            return self._pool.submit(_align_file, str(path), max_faces)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._here is None:
            from e4e_jax.inference import alignment

            self._here = alignment.Aligner.from_settings(self.align)
        fut.set_result(self._here.align_or_skip(path, max_faces))  # under the lock: one dlib user at a time
        return fut

    def pixels(self, row: Row, hw: tuple[int, int]) -> np.ndarray | folder.Skipped:
        """The row's source as uint8 (h, w, 3), or a folder.Skipped saying why there is none."""
        if row.face is None:
            return folder.load_pixels(row.path, hw)
        from e4e_jax.inference import alignment

        found = self._faces(row.path)
        if isinstance(found, folder.Skipped):
            return folder.Skipped(row.path, f"{found.reason} (re-aligning face {row.face} for its source)")
        face = next((f for f in found if f.face_index == row.face), None)
        if face is None:
            return folder.Skipped(
                row.path,
                f"face {row.face} is not found any more ({len(found)} found): the photo changed after the inversion",
            )
        return alignment.resize_for_encoder(face.image, hw)

    def load(self, row: Row, hw: tuple[int, int]) -> np.ndarray | folder.Skipped:
        """The row's source as float32 (h, w, 3) in [-1, 1] (the official transform's values), or Skipped."""
        px = self.pixels(row, hw)
        return px if isinstance(px, folder.Skipped) else folder.normalize(px)


def _align_file(path: str, max_faces: int):
    """Pool task: the worker's Aligner on one photo (list[AlignedFace] | folder.Skipped)."""
    from e4e_jax.inference import alignment

    return alignment.worker_align(path, max_faces)
