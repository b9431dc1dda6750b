"""What an inversion run is (its plan), and making OUTPUT ready for it (process 0, under the folder's lock):
a fresh start, `--overwrite`, or `--resume` of an interrupted run (refused if it differs, naming what; the
chunks of input files changed since are redone) or of a finished one (nothing to do; a kill in the final
clean-up is finished here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

from e4e_jax import options
from e4e_jax.errors import UserError
from e4e_jax.jobs.invert import layout as layout_lib
from e4e_jax.jobs.invert.options import InvertOptions
from e4e_jax.storage import manifest, outdir, plan_file

# Plan fields that change the outputs: a --resume with any of them different is refused. The options among
# them are declared so in InvertOptions (plan=True); the others are facts about the model, the listing and
# the machine.
PLAN_FACTS = (
    "model_config_sha256",
    "model_weights_id",
    "n_files",
    "listing_sha256",
    "local_devices",
    "exif_orientation",
)
PLAN_KEYS = options.plan_keys(InvertOptions) + PLAN_FACTS
_LISTING_KEYS = ("n_files", "listing_sha256")
NAMES_SHOWN = 5  # file names a message lists before "(+N more)"


def make_plan(opts: InvertOptions, files: Sequence[str], batch_size: int, local_devices: int) -> dict[str, Any]:
    """What the run is: the PLAN_KEYS (in plan.json's order). batch_size (rounded to the devices) and
    local_devices are in it because they change the last bits of the latents (other batch shapes, other
    kernels)."""
    from e4e_jax.data import folder
    from e4e_jax.storage import bundle

    return {
        "model": str(Path(opts.model).resolve()),
        "model_config_sha256": bundle.sha256_of(Path(opts.model) / "config.json"),
        "model_weights_id": bundle.weights_id(opts.model),
        "images": str(opts.images.resolve()),
        "recursive": opts.recursive,
        "n_files": len(files),
        "listing_sha256": layout_lib.listing_digest(files),
        "chunk_size": opts.chunk_size,
        "batch_size": batch_size,
        "local_devices": local_devices,
        "dtype": opts.dtype,
        "modulation": opts.modulation,
        "image_format": opts.image_format,
        "jpeg_quality": opts.jpeg_quality if opts.image_format in ("jpg", "webp") else None,
        "image_size": opts.image_size,
        "fast_decode": opts.fast_decode,
        "exif_orientation": folder.APPLY_EXIF_ORIENTATION,
        "align": opts.align,
        "faces": opts.faces if opts.align else None,
        "align_size": opts.align_size if opts.align else None,
        "iterations": opts.iterations,  # ReStyle: the count used (the bundle's unless --iterations); e4e: None
        "save_iterations": opts.save_iterations,
    }


def prepare_output(
    opts, lay: layout_lib.Layout, plan: dict[str, Any], files: Sequence[str], unlisted: Sequence[str] = ()
) -> tuple[Optional[dict[str, Any]], list[str]]:
    """Make OUTPUT ready for `plan` (or refuse, saying why). `files`: the listing; `unlisted`: the folder
    entries it could not use. Returns (report.json of a finished run that `--resume` has nothing to add
    to, else None; the input files changed since an interrupted run, whose chunks are redone)."""
    outdir.own(lay.root, layout_lib.OUTPUTS, resume=opts.resume)  # never a folder holding others' files
    old = lay.read_plan()
    changed: list[str] = []
    if opts.resume:
        finished = lay.finished_report()
        if finished is not None:
            before = manifest.read_lines(lay.root / manifest.FILES) + [s["file"] for s in finished.get("skipped", [])]
            _refuse_other_run(finished.get("plan") or {}, plan, before, [*files, *unlisted], lay, opts.images)
            lay.drop_state()  # a kill in the final clean-up left it: the run is complete without it
            return finished, []
        if old is None:
            if not outdir.is_empty_dir(lay.root):
                raise UserError(
                    f"--resume: {lay.root} holds no run to resume (no {layout_lib.STATE_DIR}/"
                    f"{plan_file.PLAN_NAME}); use --overwrite or another --output"
                )
        else:
            before = [p for p, _, _ in lay.read_listing() or []]
            _refuse_other_run(old, plan, before, files, lay, opts.images)
            changed = _redo_changed_files(lay, files, opts.chunk_size)
        lay.clean_temps()
    elif not outdir.is_empty_dir(lay.root):
        if not opts.overwrite:
            hint = outdir.UNFINISHED_HINT if old is not None else ""
            outdir.refuse_not_empty(lay.root, "--output", "removes only what an earlier invert wrote there", hint)
        lay.clear_owned()
    lay.root.mkdir(parents=True, exist_ok=True)
    lay.write_plan(plan)
    if not changed:
        lay.write_listing(layout_lib.file_stats(files))
    return None, changed


def _refuse_other_run(
    old: dict[str, Any],
    plan: dict[str, Any],
    before: Sequence[str],
    now: Sequence[str],
    lay: layout_lib.Layout,
    images: Path,
) -> None:
    """UserError naming what differs between the recorded run (`old`, its input files `before`; [] if
    unknown) and this one (`now`); a changed listing names the files added and removed."""
    diff = layout_lib.describe_mismatch(old, plan, [k for k in plan if k in PLAN_KEYS])  # plan.json's order
    if not diff:
        return
    if before and any(k in old and old[k] != plan.get(k) for k in _LISTING_KEYS):
        diff = [d for d in diff if not d.startswith(tuple(f"{k}:" for k in _LISTING_KEYS))]
        diff.append(describe_listing_change(before, now, images))
    what = "finished" if lay.finished_report() is not None else "interrupted"
    raise UserError(
        f"--resume: this run differs from the {what} one in {lay.root}: "
        + "; ".join(diff)
        + ". Rerun with the same arguments, or --overwrite to start over"
    )


def describe_listing_change(before: Sequence[str], now: Sequence[str], images: Path) -> str:
    """'the files of --images changed since the run started: 2 added (a.jpg, b.jpg); 1 removed (c.jpg)'."""
    old, new = set(before), set(now)
    parts = [
        f"{len(names)} {what} ({name_list(names, images)})"
        for what, names in (("added", sorted(new - old)), ("removed", sorted(old - new)))
        if names
    ]
    return "the files of --images changed since the run started: " + "; ".join(parts or ["their order"])


def name_list(paths: Sequence[str], root: Optional[Path] = None) -> str:
    """The first NAMES_SHOWN paths (relative to `root` where they are in it), one line each, then '+N more'."""

    def short(p: str) -> str:
        rel = os.path.relpath(p, root) if root is not None else p
        return manifest.one_line(p if rel.startswith("..") else rel)

    shown = ", ".join(short(p) for p in paths[:NAMES_SHOWN])
    return shown + (f" (+{len(paths) - NAMES_SHOWN} more)" if len(paths) > NAMES_SHOWN else "")


def _redo_changed_files(lay: layout_lib.Layout, files: Sequence[str], chunk_size: int) -> list[str]:
    """The files whose size or modification time differ from the recorded listing (same names: the plan
    matched); their committed chunks are removed so the run redoes them, and the listing is renewed."""
    before = lay.read_listing()
    now = layout_lib.file_stats(files)
    if before is None or len(before) != len(now):
        return []  # a run of an older version: nothing recorded to compare with
    changed = [i for i, (b, n) in enumerate(zip(before, now)) if b[1:] != n[1:]]
    for j in sorted({i // chunk_size for i in changed}):
        lay.chunk_path(j).unlink(missing_ok=True)
    lay.write_listing(now)  # after the chunks are gone: a kill in between finds the same changes again
    return [files[i] for i in changed]
