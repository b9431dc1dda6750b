"""The files of an `e4e-jax invert` output folder, and reading them back exactly (evaluate, edit, quickstart).

    OUTPUT/latents.npy      (N, n_latent, 512) float32 codes (a ReStyle bundle's: the last iteration's)
    OUTPUT/latents_iterations.npy
                            with a ReStyle bundle and --save-iterations: (N, iterations, n_latent, 512)
                            float32, the codes after each iteration ([:, -1] is latents.npy)
    OUTPUT/files.txt        N lines: the input image of each code, in order
    OUTPUT/inversions.txt   N lines: each code's reconstruction, relative to OUTPUT (absent with --no-images)
    OUTPUT/inversions/      the reconstructions (.jpg, .png or .webp)
    OUTPUT/faces.txt        with --align: N lines, the face index of each code in its file (0 = largest)
    OUTPUT/report.json      counts, timings and, with --align, the alignment settings under "align"
                            (e4e_jax/alignment.py `settings_record`), which re-make each code's crop
    OUTPUT/skipped.txt      see docs/inversion_job.md

`e4e-jax tune` writes the same layout (its latents.npy are the pivots, its inversions the tuned
reconstructions; faces.txt as the invert output it read) and adds:

    OUTPUT/generators.txt   N lines: each photo's tuned generator, relative to OUTPUT
    OUTPUT/generators/      one 'stylegan2_delta' bundle per photo (e4e_jax/pti_bundle.py)
    OUTPUT/metrics.json     each photo's L2 and LPIPS before and after tuning, and its steps

`e4e-jax align` gives its output folder a skipped.txt and a report.json too, under these names and with
skipped.txt in the same form (skipped_text).

The writer of this layout is e4e_jax/batch_inversion/layout.py; the names are defined here, once.

Readers take the reconstructions exactly as inversions.txt lists them, never by pattern, so a file left
by an earlier run can not be mistaken for this run's. Output folders of older versions have no
inversions.txt; their reconstructions are found by the one name those versions gave them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from e4e_jax.errors import UserError

LATENTS = "latents.npy"
LATENT_ITERATIONS = "latents_iterations.npy"
FILES = "files.txt"
INVERSIONS = "inversions.txt"
INVERSIONS_DIR = "inversions"
FACES = "faces.txt"
SKIPPED = "skipped.txt"
REPORT = "report.json"
GENERATORS = "generators.txt"
GENERATORS_DIR = "generators"
METRICS = "metrics.json"
# The reconstruction name of versions before inversions.txt: inversions/{index:05d}_{input stem}.png.
LEGACY_SUFFIX = ".png"
ALIGN_RECORD = "align"  # report.json's key for the alignment settings of an `invert --align` run

# Where a work directory keeps its trained model: `e4e-jax train --workdir W` writes the bundle W/model,
# the quickstart trains in W/train (so W/train/model).
TRAIN_MODEL_DIR = "model"
QUICKSTART_TRAIN_DIR = "train"
TRAINING_LOG = "metrics.jsonl"  # the JSON-lines scalars of a training run (training/writers.py)
TRAINING_MARKERS = (TRAINING_LOG, "checkpoints")  # a training work directory holds one from its first step
LOSS_CURVE = "loss_curve.png"  # the losses of a training run drawn from metrics.jsonl, in its work directory

# Bytes of an input's stem kept in an output name derived from it (with an index, a face tag and a
# temporary file's suffix the name stays under the 255 bytes file systems allow).
MAX_STEM_BYTES = 120


def short_stem(stem: str) -> str:
    """`stem` cut to MAX_STEM_BYTES bytes (UTF-8, undecodable bytes kept as they are)."""
    while len(stem.encode("utf-8", "surrogateescape")) > MAX_STEM_BYTES:
        stem = stem[:-1]
    return stem


# One entry per line, the tab between path and reason: these characters are written as escapes.
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def one_line(text: str) -> str:
    """`text` (a path or a reason) as it appears in skipped.txt and in messages: on one line and free of
    tabs, with C-style escapes for a backslash (`\\\\`), a tab, a line break (`\\t`, `\\n`, `\\r`) and
    each byte that is not UTF-8 (`\\xNN`: names the file system could not decode)."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate no file name decodes to (text from elsewhere)
        raw = text.encode("utf-8", "backslashreplace")
    raw = raw.replace(b"\\", b"\\\\")
    out = raw.decode("utf-8", "backslashreplace")
    for char, escape in _ESCAPES.items():
        out = out.replace(char, escape)
    return out


def skip_message(path: str, reason: str) -> str:
    """The line `invert` and `align` print for an input that gives no output (as skipped.txt says it)."""
    return f"skipped {one_line(path)}: {one_line(reason)}"


def skipped_text(entries: Iterable[tuple[str, str]]) -> str:
    """skipped.txt (invert and align): one `path<TAB>reason` line per input that gave no output, both
    written with `one_line` (so a name holding a line break or odd bytes stays one entry)."""
    return "".join(f"{one_line(str(path))}\t{one_line(reason)}\n" for path, reason in entries)


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a manifest (one path per line; no empty lines)."""
    try:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path} cannot be read ({e}); rerun `e4e-jax invert` into a new folder") from e


def read_faces(folder: str | os.PathLike, n: int) -> list[int] | None:
    """The face index of each of the `n` codes of an `invert --align` output (faces.txt), or None for an
    output made without --align. UserError for a faces.txt of another length or with other lines."""
    path = Path(folder) / FACES
    if not path.is_file():
        return None
    lines = read_lines(path)
    if len(lines) != n or not all(line.isascii() and line.isdigit() for line in lines):
        raise UserError(
            f"{path} must hold {n} face indices (whole numbers >= 0, one a line, as {FILES} holds the files); "
            "it is damaged: rerun `e4e-jax invert` into a new folder"
        )
    return [int(line) for line in lines]


def reconstructions(folder: str | os.PathLike, files: list[str]) -> list[Path | None]:
    """Each code's reconstruction in the invert output `folder` (files: its files.txt lines), None where
    there is none (an old folder written with --no-images or missing one).

    With inversions.txt: exactly the files it lists, which must exist inside `folder`; UserError otherwise.
    Without it (older versions): inversions/{i:05d}_{stem}.png where present. No other file is ever taken.
    """
    folder = Path(folder)
    listing = folder / INVERSIONS
    if listing.is_file():
        lines = read_lines(listing)
        if len(lines) != len(files):
            raise UserError(
                f"{listing} lists {len(lines)} reconstructions for {len(files)} inputs in "
                f"{folder / FILES}; the output is incomplete: finish it with `e4e-jax invert --resume`"
            )
        root = folder.resolve()
        paths = []
        for line in lines:
            p = (folder / line).resolve()
            if root not in p.parents:
                raise UserError(f"{listing} lists {line!r}, which is outside {folder}; the file is damaged")
            if not p.is_file():
                raise UserError(
                    f"{listing} lists {line}, which is missing; finish the output with "
                    "`e4e-jax invert --resume` or rerun it"
                )
            paths.append(p)
        return paths
    out: list[Path | None] = []
    for i, f in enumerate(files):
        p = folder / INVERSIONS_DIR / f"{i:05d}_{Path(f).stem}{LEGACY_SUFFIX}"
        out.append(p if p.is_file() else None)
    return out
