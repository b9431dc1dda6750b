"""The on-disk layout of an inversion run: what `e4e-jax invert` writes, commits and merges.

    OUTPUT/latents.npy           (N, n_latent, style_dim) float32, one row per inverted image (final)
    OUTPUT/latents_iterations.npy
                                 ReStyle --save-iterations: (N, iterations, n_latent, style_dim) (final)
    OUTPUT/files.txt             the input file of each row, one path a line (final)
    OUTPUT/faces.txt             with --align: the face index of each row in its file (0 = largest)
    OUTPUT/inversions.txt        the reconstruction of each row, relative to OUTPUT (final; absent with
                                 --no-images)
    OUTPUT/skipped.txt           files that could not be used, `path<TAB>reason` (final)
    OUTPUT/report.json           counts, skipped files with reasons, timings (final)
    OUTPUT/inversions/{row:05d}_{stem}.{ext}
    OUTPUT/.e4e-invert/plan.json what the run is (inputs, options); `--resume` checks it
    OUTPUT/.e4e-invert/listing.tsv
                                 `size<TAB>mtime_ns<TAB>path` of each input file when the run (or its
                                 last --resume) started: `--resume` redoes the chunks of files changed since
    OUTPUT/.e4e-invert/chunk-{j:06d}.npz
                                 committed chunk j of the sorted file list: its latents, input files,
                                 face indices, reconstruction names and skipped files

A chunk is committed (atomically, after its reconstructions are on disk) once every file in it is
accounted for, so `kill -9` at any moment loses at most the chunks in flight. The final files are
assembled from the chunks by process 0 (`merge`), streaming through `np.lib.format.open_memmap` so
memory stays flat, and the chunk folder is removed afterwards. Under several processes the row of an
image is only known at the merge: reconstructions are then written under a staged name
(`inversions/.staged-{j:06d}-{k:05d}_{stem}.{ext}`) and renamed by the merge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from e4e_jax.errors import UserError
from e4e_jax.runtime import pause_points
from e4e_jax.storage import fileio, manifest, outdir, plan_file

STATE_DIR = ".e4e-invert"
LISTING_NAME = "listing.tsv"
PLAN_VERSION = 1
# report.json first: it marks a finished run, so --overwrite killed half-way leaves no "finished" folder.
FINAL_FILES = (
    manifest.REPORT,
    manifest.LATENTS,
    manifest.LATENT_ITERATIONS,
    manifest.FILES,
    manifest.FACES,
    manifest.INVERSIONS,
    manifest.SKIPPED,
)
IMAGES_DIR = manifest.INVERSIONS_DIR
# The names this command gives reconstructions, final ({row:05d}_...) or staged (.staged-{chunk}-{k}_...).
_OWN_IMAGES = tuple(
    f"{IMAGES_DIR}/{staged}{'[0-9]' * 5}*_*.{ext}"
    for staged in ("", ".staged-[0-9]*-")
    for ext in ("jpg", "png", "webp")
)
# Everything invert writes into OUTPUT (e4e_jax/storage/outdir.py): all that --overwrite removes, and all an output
# folder may hold. An unfinished run of a version before the mark (its plan) is adopted by --resume.
OUTPUTS = outdir.Outputs(
    "invert", (*FINAL_FILES, STATE_DIR, *_OWN_IMAGES), legacy=(f"{STATE_DIR}/{plan_file.PLAN_NAME}",)
)
NO_FACE = -1  # `faces` entry of a latent that did not come from face alignment


def chunk_name(j: int) -> str:
    return f"chunk-{j:06d}.npz"


# Characters of the input's stem kept in a reconstruction's name: with the row, the face tag, the staged
# prefix and a temporary file's suffix the name stays under the 255 bytes file systems allow (the row
# keeps names unique; inversions.txt says which input each is).
MAX_STEM_CHARS = 120


def _short(stem: str) -> str:
    while len(stem.encode("utf-8", "surrogateescape")) > MAX_STEM_CHARS:
        stem = stem[:-1]
    return stem


def image_name(row: int, stem: str, ext: str, face: int = NO_FACE) -> str:
    """Final reconstruction name, relative to OUTPUT: `inversions/{row:05d}_{stem}[_face{K}].{ext}`
    (the stem cut to MAX_STEM_CHARS bytes)."""
    tag = f"_face{face}" if face != NO_FACE else ""
    return f"{IMAGES_DIR}/{row:05d}_{_short(stem)}{tag}.{ext}"


def staged_name(chunk: int, k: int, stem: str, ext: str, face: int = NO_FACE) -> str:
    tag = f"_face{face}" if face != NO_FACE else ""
    return f"{IMAGES_DIR}/.staged-{chunk:06d}-{k:05d}_{_short(stem)}{tag}.{ext}"


def listing_digest(files: Sequence[str]) -> str:
    """sha256 of the sorted input listing (what `--resume` and every process must agree on)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Chunk j: files[start:stop] of the sorted listing."""

    index: int
    start: int
    stop: int


def chunks(n_files: int, chunk_size: int) -> list[Chunk]:
    return [Chunk(j, s, min(s + chunk_size, n_files)) for j, s in enumerate(range(0, n_files, chunk_size))]


@dataclasses.dataclass
class ChunkResult:
    """What a committed chunk holds (rows in input order)."""

    latents: np.ndarray  # (n, n_latent, style_dim) float32; (n, iterations, n_latent, style_dim) (--save-iterations)
    files: list[str]  # (n,) input file of each row
    faces: np.ndarray  # (n,) int32 face index, NO_FACE without alignment
    images: list[str]  # (n,) reconstruction path relative to OUTPUT ('' = none written)
    skipped: list[tuple[str, str]]  # (file, reason)
    process: int = 0  # index of the process that inverted the chunk


class Layout:
    """Paths of one output folder, and the reading/writing of its plan, chunks and final files."""

    def __init__(self, output: str | os.PathLike):
        self.root = Path(output)
        self.state = self.root / STATE_DIR
        self.images = self.root / IMAGES_DIR

    # ---- plan -------------------------------------------------------------------------------------
    def read_plan(self) -> Optional[dict[str, Any]]:
        return plan_file.read(self.state)

    def write_plan(self, plan: dict[str, Any]) -> None:
        plan_file.write(self.state, plan, PLAN_VERSION)

    # ---- listing ----------------------------------------------------------------------------------
    def write_listing(self, stats: Sequence[tuple[str, int, int]]) -> None:
        """The (path, size, mtime_ns) of every input file, in listing order (`file_stats`)."""
        self.state.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{size}\t{mtime}\t{path}\n" for path, size, mtime in stats)
        fileio.write_text(self.state / LISTING_NAME, text)

    def read_listing(self) -> Optional[list[tuple[str, int, int]]]:
        """What `write_listing` wrote; None if there is none (a run of an older version) or it is damaged."""
        try:
            lines = (self.state / LISTING_NAME).read_text(encoding="utf-8").splitlines()
            return [(path, int(size), int(mtime)) for size, mtime, path in (line.split("\t", 2) for line in lines)]
        except (OSError, ValueError):
            return None

    # ---- chunks -----------------------------------------------------------------------------------
    def chunk_path(self, j: int) -> Path:
        return self.state / chunk_name(j)

    def is_committed(self, j: int) -> bool:
        """Chunk j's file exists and its reconstructions are all on disk (a power cut may have lost
        images written without fsync: then the chunk is redone)."""
        path = self.chunk_path(j)
        if not path.is_file():
            return False
        try:
            result = self.read_chunk(j)
        except UserError:
            return False
        return all((self.root / name).is_file() for name in result.images if name)

    def commit_chunk(self, j: int, r: ChunkResult, latent_shape: tuple[int, int]) -> None:
        latents = np.asarray(r.latents, np.float32).reshape(-1, *latent_shape)

        def write(f):
            np.savez(
                f,
                latents=latents,
                files=np.asarray(r.files, dtype=str),
                faces=np.asarray(r.faces, np.int32),
                images=np.asarray(r.images, dtype=str),
                skipped_files=np.asarray([s[0] for s in r.skipped], dtype=str),
                skipped_reasons=np.asarray([s[1] for s in r.skipped], dtype=str),
                process=np.int32(r.process),
            )

        fileio.write_atomic(self.chunk_path(j), write)

    def read_chunk(self, j: int, with_latents: bool = True) -> ChunkResult:
        path = self.chunk_path(j)
        try:
            with np.load(path, allow_pickle=False) as z:
                return ChunkResult(
                    latents=z["latents"] if with_latents else None,
                    files=[str(s) for s in z["files"]],
                    faces=z["faces"],
                    images=[str(s) for s in z["images"]],
                    skipped=list(zip((str(s) for s in z["skipped_files"]), (str(s) for s in z["skipped_reasons"]))),
                    process=int(z["process"]),
                )
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path} is damaged ({e}); rerun with --resume to redo that chunk") from e

    def committed_rows(self, j: int) -> int:
        return len(self.read_chunk(j, with_latents=False).files)

    # ---- starting a run ----------------------------------------------------------------------------
    def clear_owned(self) -> int:
        """--overwrite: remove what an earlier run wrote (nothing else, not the folder's mark); returns how
        many entries."""
        return OUTPUTS.remove(self.root)

    def clean_temps(self) -> None:
        """Temporary files a killed run left (call under the folder's lock)."""
        for d in (self.root, self.images, self.state):
            fileio.remove_stale_temps(d)

    # ---- the end of a run --------------------------------------------------------------------------
    def merge(
        self,
        n_chunks: int,
        latent_shape: tuple[int, int],
        with_images: bool,
        unlisted: Sequence[tuple[str, str]] = (),
        iterations: Optional[int] = None,
    ) -> tuple[int, int, list[tuple[str, str]], dict[int, int]]:
        """Assemble the final files from chunks 0..n_chunks-1 (all committed); returns (rows, input files
        with at least one row (with --faces all a file gives several), skipped, input files handled per
        process). `unlisted`: (path, reason) of folder entries the listing could
        not use (broken links, ...); they join the skipped files, all in path order. `iterations`: the
        chunks hold every ReStyle iteration's latents (--save-iterations): latents.npy gets the last,
        latents_iterations.npy all of them.

        Idempotent: a merge killed half-way is finished by running it again.
        """
        metas = [self.read_chunk(j, with_latents=False) for j in range(n_chunks)]
        n = sum(len(m.files) for m in metas)
        self._merge_latents(n_chunks, (n, *latent_shape), iterations)
        files, names, skipped = [], [], []
        per_process: dict[int, int] = {}
        row = 0
        for j, m in enumerate(metas):
            per_process[m.process] = per_process.get(m.process, 0) + len(set(m.files)) + len(m.skipped)
            for k, (f, face, recorded) in enumerate(zip(m.files, m.faces, m.images)):
                files.append(f)
                if with_images:
                    final = image_name(row, Path(f).stem, Path(recorded).suffix.lstrip("."), int(face))
                    if recorded != final:  # Staged under several processes: the row is known only now.
                        src, dst = self.root / recorded, self.root / final
                        if src.exists():
                            os.replace(src, dst)
                        elif not dst.exists():
                            raise UserError(f"reconstruction {src} is missing; rerun with --resume")
                    names.append(final)
                row += 1
            skipped += m.skipped
        skipped = sorted([*skipped, *unlisted], key=lambda fr: fr[0])
        fileio.write_text(self.root / manifest.FILES, "".join(f"{f}\n" for f in files))
        if any(int(face) != NO_FACE for m in metas for face in m.faces):
            # --align: which face of its file each row is (0 = the largest), one a line as files.txt.
            fileio.write_text(self.root / manifest.FACES, "".join(f"{int(face)}\n" for m in metas for face in m.faces))
        if with_images:
            fileio.write_text(self.root / manifest.INVERSIONS, "".join(f"{p}\n" for p in names))
        fileio.write_text(self.root / manifest.SKIPPED, manifest.skipped_text(skipped))
        return n, len(set(files)), skipped, per_process

    def _merge_latents(self, n_chunks: int, shape: tuple[int, ...], iterations: Optional[int]) -> None:
        """latents.npy of `shape` (and latents_iterations.npy with `iterations`), streamed chunk by chunk."""
        targets = [(manifest.LATENTS, shape)]
        if iterations:
            targets.append((manifest.LATENT_ITERATIONS, (shape[0], iterations, *shape[1:])))
        with contextlib.ExitStack() as stack:
            outs = [
                _allocated_memmap(stack.enter_context(fileio.replacing(self.root / name)), full, self.root / name)
                for name, full in targets
            ]
            row = 0
            for j in range(n_chunks):
                lat = self.read_chunk(j).latents  # (rows, n_latent, D), or (rows, iterations, n_latent, D)
                outs[0][row : row + len(lat)] = lat[:, -1] if iterations else lat
                if iterations:
                    outs[1][row : row + len(lat)] = lat
                row += len(lat)
            for out in outs:
                out.flush()
            del outs, out  # the memmaps are closed before the renames

    def finish(self, report: dict[str, Any]) -> None:
        """Write report.json last, then drop the chunk state (the final files now hold it all)."""
        fileio.write_text(self.root / manifest.REPORT, json.dumps(report, indent=2) + "\n")
        pause_points.reached("invert-finishing")
        self.drop_state()

    def drop_state(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)

    def finished_report(self) -> Optional[dict[str, Any]]:
        """report.json of a finished run (written last, after every final file), or None."""
        path = self.root / manifest.REPORT
        if not (path.is_file() and (self.root / manifest.LATENTS).is_file()):
            return None
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) else None


def file_stats(files: Sequence[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each file ((path, -1, -1) for one that cannot be read now)."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f, -1, -1))
    return out


def _allocated_memmap(tmp: Path, shape: tuple[int, ...], final: Path) -> np.memmap:
    """A float32 .npy memmap of `shape` at `tmp` with its blocks reserved (fileio.allocated_memmap: a full
    disk is a NoRoomError naming `final`, an OSError that the command reports with the --resume hint)."""
    return fileio.allocated_memmap(tmp, shape, np.float32, final)


def describe_mismatch(old: dict[str, Any], new: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """The plan fields that differ between a recorded run and this one, as 'key: old -> new'. A field
    the recorded plan lacks (written by a version before the field existed) is not compared."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if k in old and old[k] != new.get(k)]
