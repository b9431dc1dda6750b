"""The output folder of `e4e-jax tune`: invert's layout (names in e4e_jax/storage/manifest.py) plus the tuned
generators, written batch by batch and merged at the end.

    OUTPUT/files.txt, faces.txt   the photos (as the invert output lists them)
    OUTPUT/latents.npy            their pivots (the invert output's latents)
    OUTPUT/inversions.txt, inversions/{row:05d}_{stem}.{ext}   tuned reconstructions
    OUTPUT/generators.txt, generators/{row:05d}_{stem}/       tuned generators ('stylegan2_delta' bundles)
    OUTPUT/metrics.json           L2 / LPIPS before and after, steps, per photo and on average
    OUTPUT/report.json            counts and timings (the one file a rerun does not reproduce)
    OUTPUT/.e4e-tune/plan.json    what the run is; `--resume` checks it
    OUTPUT/.e4e-tune/batch-{j:06d}.json   committed batch j: its rows' names and metrics

A batch is committed (atomically) after its generators and reconstructions are on disk, so a kill loses
at most the batch in flight and `--resume` redoes only that; the merge writes the final files from the
commits and removes the state folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from e4e_jax.errors import UserError
from e4e_jax.jobs.invert import layout as invert_layout
from e4e_jax.storage import fileio, manifest, outdir, plan_file

STATE_DIR = ".e4e-tune"
PLAN_VERSION = 1
FINAL_FILES = (
    manifest.FILES,
    manifest.FACES,
    manifest.LATENTS,
    manifest.INVERSIONS,
    manifest.GENERATORS,
    manifest.METRICS,
    manifest.REPORT,
)
_ROW = "[0-9]" * 5  # the start of every reconstruction's and generator's name ({row:05d}_{stem})
# Everything tune writes into OUTPUT (e4e_jax/storage/outdir.py): all that --overwrite removes, and all an output
# folder may hold.
OUTPUTS = outdir.Outputs(
    "tune",
    (
        *FINAL_FILES,
        STATE_DIR,
        *(f"{manifest.INVERSIONS_DIR}/{_ROW}*_*.{ext}" for ext in ("jpg", "png", "webp")),
        f"{manifest.GENERATORS_DIR}/{_ROW}*_*",
    ),
)
METRIC_KEYS = ("l2_before", "lpips_before", "l2_after", "lpips_after")


@dataclasses.dataclass
class BatchResult:
    """What a committed batch holds, one entry per row (rows in order)."""

    rows: list[int]
    images: list[str]  # reconstruction paths relative to OUTPUT
    generators: list[str]  # bundle paths relative to OUTPUT
    steps: list[int]
    metrics: dict[str, list[float]]  # METRIC_KEYS -> per-row values


def row_names(row: int, photo: str, face: int, ext: str) -> tuple[str, str]:
    """(reconstruction, generator bundle) of a row, relative to OUTPUT: invert's reconstruction name
    (`layout.image_name`) and the same stem under generators/."""
    image = invert_layout.image_name(row, Path(photo).stem, ext, face)
    return image, f"{manifest.GENERATORS_DIR}/{Path(image).stem}"


class TuneOutput:
    """Paths of one output folder; its plan, batch commits and final files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.state = self.root / STATE_DIR

    # ---- plan -------------------------------------------------------------------------------------
    def read_plan(self) -> Optional[dict[str, Any]]:
        return plan_file.read(self.state)

    def write_plan(self, plan: dict[str, Any]) -> None:
        plan_file.write(self.state, plan, PLAN_VERSION)

    # ---- batches ----------------------------------------------------------------------------------
    def batch_path(self, j: int) -> Path:
        return self.state / f"batch-{j:06d}.json"

    def commit(self, j: int, result: BatchResult) -> None:
        fileio.write_text(self.batch_path(j), json.dumps(dataclasses.asdict(result)) + "\n")

    def read_batch(self, j: int) -> BatchResult:
        path = self.batch_path(j)
        try:
            return BatchResult(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"{path} is damaged ({e}); rerun with --resume to redo that batch") from e

    def is_committed(self, j: int) -> bool:
        """Batch j's commit exists and its reconstructions and generators are all on disk."""
        if not self.batch_path(j).is_file():
            return False
        try:
            r = self.read_batch(j)
        except UserError:
            return False
        return all((self.root / p).is_file() for p in r.images) and all(
            (self.root / g / "config.json").is_file() for g in r.generators
        )

    # ---- starting over ----------------------------------------------------------------------------
    def clear_owned(self) -> None:
        """--overwrite (and a fresh run that failed before its first commit): remove what an earlier tune
        left here (`OUTPUTS`: final files, state, reconstructions and generator bundles named as tune names
        them, temporary files), and nothing else (not the folder's mark)."""
        OUTPUTS.remove(self.root)

    def clean_temps(self) -> None:
        """Temporary files and folders a killed run left (under the folder's lock)."""
        for d in (self.root, self.state, self.root / manifest.INVERSIONS_DIR, self.root / manifest.GENERATORS_DIR):
            fileio.remove_stale_temps(d)

    # ---- the end ----------------------------------------------------------------------------------
    def merge(
        self,
        n_batches: int,
        files: Sequence[str],
        keys: Sequence[str],
        faces: Optional[Sequence[int]],
        pivots: np.ndarray,
        summary: dict[str, Any],
    ) -> dict[str, Any]:
        """Write the final files from batches 0..n_batches-1 (all committed); returns metrics.json's
        content. `keys`: each row's unique name (jobs/sources.py: the file, #faceK of an aligned face).
        `summary`: what metrics.json says about the run besides the per-photo numbers."""
        results = [self.read_batch(j) for j in range(n_batches)]
        rows = [r for b in results for r in b.rows]
        if rows != list(range(len(files))):
            raise UserError(f"the batches in {self.state} do not cover the {len(files)} photos; rerun with --resume")
        fileio.write_text(self.root / manifest.FILES, "".join(f"{f}\n" for f in files))
        if faces is not None:
            fileio.write_text(self.root / manifest.FACES, "".join(f"{k}\n" for k in faces))
        fileio.save_npy(self.root / manifest.LATENTS, np.asarray(pivots, np.float32))
        fileio.write_text(self.root / manifest.INVERSIONS, "".join(f"{p}\n" for b in results for p in b.images))
        fileio.write_text(self.root / manifest.GENERATORS, "".join(f"{g}\n" for b in results for g in b.generators))
        photos = []
        for b in results:
            for i, row in enumerate(b.rows):
                metrics = {k: b.metrics[k][i] for k in METRIC_KEYS}
                photos.append({"key": keys[row], "file": files[row], "steps": b.steps[i], **metrics})
        means = {k: float(np.mean([p[k] for p in photos])) for k in (*METRIC_KEYS, "steps")}
        metrics = {**summary, "n_photos": len(photos), "mean": means, "photos": photos}
        fileio.write_text(self.root / manifest.METRICS, json.dumps(metrics, indent=1) + "\n")
        return metrics

    def finish(self, report: dict[str, Any]) -> None:
        """report.json last, then the state folder goes (the final files hold it all)."""
        fileio.write_text(self.root / manifest.REPORT, json.dumps(report, indent=2) + "\n")
        shutil.rmtree(self.state, ignore_errors=True)
