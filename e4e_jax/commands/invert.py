"""`e4e-jax invert`: a folder of images → latents.npy, files.txt, inversions/*.png, skipped report.

Exit status: 0 every image inverted; 3 partial success (some files skipped, see skipped.txt);
1 nothing could be inverted; 2 bad arguments or model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("invert", help=help_text, description=help_text + ". Writes OUTPUT/latents.npy "
                       "(N, n_latent, 512) float32 in the sorted order of OUTPUT/files.txt, OUTPUT/inversions/*.png, "
                       "and OUTPUT/skipped.txt + report.json for files that could not be used. Exit status 3 means "
                       "partial success (some files skipped).")
    p.add_argument("--model", required=True, help="e4e bundle directory (python -m tools.convert_weights e4e ...)")
    p.add_argument("--images", required=True, type=Path, help="folder of images (jpg, png, bmp, webp, tif)")
    p.add_argument("--output", required=True, type=Path, help="output folder (created)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    p.add_argument("--no-images", action="store_true", help="write latents only, no inversions/*.png")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--modulation", choices=("auto", "grouped", "activation"), default="auto",
                   help="modulated-conv formulation of the generator (same maths)")
    p.add_argument("--workers", type=int, default=None, help="image decoding threads (default: CPU count)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --output")
    p.set_defaults(run=run)


def _atomic_save_npy(path: Path, array) -> None:
    import numpy as np

    tmp = path.with_name(path.name + ".partial.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from e4e_jax import inversion
    from e4e_jax.bundle import BundleError
    from e4e_jax.data import folder

    if not args.images.is_dir():
        print(f"error: --images {args.images} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        print(f"error: --output {args.output} is not empty; choose another folder or pass --overwrite", file=sys.stderr)
        return EXIT_USAGE
    try:
        model = inversion.load_e4e(args.model, modulation=args.modulation, dtype=args.dtype)
    except (BundleError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    paths = folder.list_images(args.images, recursive=args.recursive)
    if not paths:
        print(f"error: no images (jpg, png, bmp, webp, tif) in {args.images}", file=sys.stderr)
        return EXIT_NOTHING
    out_img = args.output / "inversions"
    out_img.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    latents, done, skipped = [], [], []
    batches = folder.iter_batches(paths, args.batch_size, model.input_hw, num_workers=args.workers)
    with tqdm(total=len(paths), desc="invert", unit="img") as bar:
        for lat, imgs, batch_paths, batch_skipped in inversion.iter_invert(model, batches, args.batch_size):
            for s in batch_skipped:
                tqdm.write(f"skipped {s.path}: {s.reason}", file=sys.stderr)
            skipped.extend(batch_skipped)
            if not args.no_images and imgs is not None:
                for i, (img, p) in enumerate(zip(imgs, batch_paths)):
                    folder.save_png(out_img / f"{len(done) + i:05d}_{Path(p).stem}.png", img)
            latents.append(lat)
            done.extend(batch_paths)
            bar.update(len(batch_paths) + len(batch_skipped))
    n_latent = model.gen_config.n_latent
    all_latents = np.concatenate(latents) if latents else np.zeros((0, n_latent, 512), np.float32)
    _atomic_save_npy(args.output / "latents.npy", all_latents.astype(np.float32))
    _atomic_write_text(args.output / "files.txt", "".join(f"{p}\n" for p in done))
    _atomic_write_text(args.output / "skipped.txt", "".join(f"{s.path}\t{s.reason}\n" for s in skipped))
    report = {"model": str(args.model), "images": str(args.images), "n_inverted": len(done),
              "n_skipped": len(skipped), "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped],
              "seconds": round(time.time() - t0, 2), "latents_shape": list(all_latents.shape)}
    _atomic_write_text(args.output / "report.json", json.dumps(report, indent=2) + "\n")
    print(f"inverted {len(done)} of {len(paths)} images into {args.output}"
          + (f"; skipped {len(skipped)} (see {args.output / 'skipped.txt'})" if skipped else ""))
    if not done:
        return EXIT_NOTHING
    return EXIT_PARTIAL if skipped else EXIT_OK
