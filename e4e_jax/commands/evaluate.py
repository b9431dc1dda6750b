"""`e4e-jax evaluate`: the paper's metrics for an e4e bundle on a folder of images -> OUTPUT/metrics.json.

Distortion (L2, LPIPS), perceptual quality (FID, SWD), editability (LEC with InterFaceGAN / GANSpace
edits) and latent-space measures (variation of the W+ codes, E(G(w)) recovery distance); see
e4e_jax/evaluation.py for the definitions. Exit status: 0 done; 3 done but some files were skipped;
1 nothing could be evaluated; 2 bad arguments, model or bundle.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e4e_jax import cli_args
from e4e_jax.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, UserError
FID_HELP = ("FID needs Inception weights: convert pt_inception-2015-12-05-6726825d.pth with `python -m "
            "tools.convert_weights inception pt_inception-2015-12-05-6726825d.pth --out DIR` and pass --inception DIR")
LPIPS_HELP = ("LPIPS needs LPIPS weights: convert them with `python -m tools.convert_weights lpips alex.pth "
              "alexnet-owt-7be5be79.pth --out DIR` and pass --lpips DIR")


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("evaluate", help=help_text, description=help_text + ": distortion (L2, LPIPS), perceptual "
                       "quality (FID, SWD), editability (LEC) and latent measures (W+ variation, E(G(w)) distance). "
                       "Writes OUTPUT/metrics.json and prints a table.")
    p.add_argument("--model", required=True, help="e4e bundle directory (python -m tools.convert_weights e4e ...)")
    p.add_argument("--images", type=Path, default=None, help="folder of the original images")
    p.add_argument("--inversions", type=Path, default=None,
                   help="output folder of `e4e-jax invert` (latents.npy, files.txt, the reconstructions listed in "
                        "inversions.txt): distortion is measured on those saved reconstructions, as official e4e's "
                        "loss-on-images script does")
    p.add_argument("--output", required=True, type=Path,
                   help="folder for metrics.json (created; must not be or hold an input)")
    p.add_argument("--lpips", default=None, help="lpips bundle (without it LPIPS is not computed)")
    p.add_argument("--inception", default=None, help="inception bundle for FID (without it FID is not computed)")
    p.add_argument("--directions", type=Path, nargs="*", default=[],
                   help="InterFaceGAN direction files (.pt) for LEC, e.g. age.pt smile.pt")
    p.add_argument("--factor", type=cli_args.finite_float, default=3.0,
                   help="InterFaceGAN edit strength for LEC (official: 3)")
    p.add_argument("--ganspace", type=Path, default=None, help="GANSpace PCA file (.pt) for LEC")
    p.add_argument("--ganspace-edit", action="append", default=[], metavar="IDX,START,END,STRENGTH",
                   help="GANSpace edit for LEC: component, layers start:end (end exclusive), strength in stds; "
                        "may repeat")
    p.add_argument("--lec-batch", type=cli_args.positive_int, default=1,
                   help="average LEC distances over groups of N images before the 1%%/99%% outlier filter, as "
                        "official e4e's LEC metric does per batch (its default is 8); 1 = per image")
    p.add_argument("--num-samples", type=cli_args.non_negative_int, default=100,
                   help="random w for the E(G(w)) recovery distance (0 skips it)")
    p.add_argument("--name", default=None, help="row name in the printed table (default: the model folder)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed for SWD patches/directions and sampled w")
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    p.add_argument("--workers", type=cli_args.non_negative_int, default=None,
                   help="image decoding threads (default: CPU count; 0 decodes in the main thread)")
    p.set_defaults(run=run)


def _parse_ganspace_edit(spec: str) -> tuple[int, int, int, float]:
    parts = spec.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        return int(parts[0]), int(parts[1]), int(parts[2]), cli_args.finite_float(parts[3])
    except (ValueError, argparse.ArgumentTypeError):
        raise UserError(f"--ganspace-edit {spec!r}: expected IDX,START,END,STRENGTH with a finite strength, "
                        "e.g. 0,0,5,-2") from None


def _inversion_source(inv_dir: Path, images_dir: Path | None, n_latent: int):
    """(original paths, latents (N, n, 512), reconstruction file per index or None) of an `invert` output:
    exactly the files its manifests list (e4e_jax/manifest.py)."""
    import numpy as np

    from e4e_jax import manifest, outdir
    from e4e_jax.fileio import load_npy
    from e4e_jax.variable_checks import require_finite

    if not inv_dir.is_dir():
        raise UserError(f"--inversions {inv_dir} is not a folder; pass the output folder of `e4e-jax invert`")
    outdir.refuse_in_use(inv_dir, "--inversions")
    files_txt, lat_path = inv_dir / manifest.FILES, inv_dir / manifest.LATENTS
    for f in (files_txt, lat_path):
        if not f.is_file():
            raise UserError(f"--inversions {inv_dir}: {f.name} is missing; pass the output folder of `e4e-jax invert`")
    listed = manifest.read_lines(files_txt)
    latents = load_npy(lat_path)
    if latents.ndim != 3 or latents.shape[0] != len(listed) or latents.shape[1:] != (n_latent, 512):
        raise UserError(f"{lat_path}: shape {latents.shape} does not fit {len(listed)} files in files.txt and "
                        f"this model's {n_latent} latents of 512")
    require_finite(latents, str(lat_path), "rerun `e4e-jax invert`")
    originals = []
    for p in map(Path, listed):
        cand = p if p.is_file() else (images_dir / p.name if images_dir is not None else None)
        if cand is None or not cand.is_file():
            raise UserError(f"{files_txt}: original image {p} not found; pass --images with the folder that "
                            "was inverted")
        originals.append(cand)
    return originals, latents.astype(np.float32), manifest.reconstructions(inv_dir, listed)


def _edits(args, model):
    """[(name, edit_fn, inverse_fn)] for LEC."""
    from e4e_jax import editing, evaluation

    out, n = [], model.gen_config.n_latent
    for path in args.directions:
        d = editing.load_interfacegan_direction(path)
        if d.shape not in ((512,), (n, 512)):
            raise ValueError(f"{path}: direction of shape {d.shape} does not fit this model's W+ codes ({n}, 512); "
                             f"expected (1, 512) or (1, {n}, 512)")
        f, inv = evaluation.interfacegan_pair(d, args.factor)
        out.append((f"{path.stem} x{args.factor:g}", f, inv))
    if bool(args.ganspace_edit) != (args.ganspace is not None):
        raise ValueError("--ganspace PCA_FILE and --ganspace-edit IDX,START,END,STRENGTH go together")
    if args.ganspace is not None:
        pca = editing.load_ganspace_pca(args.ganspace)
        for spec in args.ganspace_edit:
            idx, start, end, strength = _parse_ganspace_edit(spec)
            if not 0 <= idx < pca.comp.shape[0] or not 0 <= start < end <= model.gen_config.n_latent:
                raise ValueError(f"--ganspace-edit {spec!r}: component must be < {pca.comp.shape[0]} and layers "
                                 f"0 <= start < end <= {model.gen_config.n_latent}")
            f, inv = evaluation.ganspace_pair(pca.comp[idx], float(pca.std[idx]), start, end, strength)
            out.append((f"ganspace pc{idx} {start}:{end} {strength:g}", f, inv))
    return out


def run(args: argparse.Namespace) -> int:  # noqa: C901 - one linear pipeline
    import jax
    import numpy as np
    from tqdm import tqdm

    from e4e_jax import bundle, evaluation, inversion, outdir, sharding
    from e4e_jax.data import folder

    if args.images is None and args.inversions is None:
        raise UserError("pass --images DIR (originals) and/or --inversions DIR (output of `e4e-jax invert`)")
    if args.images is not None and not args.images.is_dir():
        raise UserError(f"--images {args.images} is not a folder")
    inputs = [Path(args.model), args.images, args.inversions, args.lpips, args.inception, args.ganspace,
              *args.directions]
    outdir.refuse_input_overlap(args.output, [p for p in inputs if p is not None], "--output")
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output} is a file; --output names the folder for metrics.json")
    outdir.refuse_unwritable(args.output, "--output")
    model = inversion.load_e4e(args.model)
    lpips_cfg, lpips_vars = bundle.load(args.lpips, "lpips") if args.lpips else (None, None)
    _, inc_vars = bundle.load(args.inception, "inception") if args.inception else (None, None)
    try:
        edits = _edits(args, model)
    except (ValueError, KeyError) as e:  # a bad direction / PCA file, named in the message
        raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e
    listing_skipped = []
    if args.inversions is not None:
        paths, inv_latents, inv_pngs = _inversion_source(args.inversions, args.images, model.gen_config.n_latent)
    else:
        try:
            paths, listing_skipped = folder.scan_images(args.images, recursive=args.recursive)
        except OSError as e:
            raise UserError(f"--images {args.images} cannot be listed ({e.strerror or e})") from e
        for s in listing_skipped:
            print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    if not paths:
        print(f"error: no images (jpg, png, bmp, webp, tif) in {args.inversions or args.images}", file=sys.stderr)
        return EXIT_NOTHING
    index = {Path(p): i for i, p in enumerate(paths)}
    hw = model.input_hw
    net = lpips_cfg["architecture"]["net"] if lpips_cfg else "alex"

    mesh = sharding.data_mesh(jax.local_devices())
    bs = sharding.round_up(args.batch_size, mesh.size)
    variables = sharding.replicate(model.variables, mesh)

    # One compiled encoder and one generator serve inversion, LEC and E(G(w)) (the encoder is the slow
    # compile); the edits between them are cheap eager ops.
    enc_j = jax.jit(lambda v, x: inversion.encode(model, v, x))
    gen_j = jax.jit(lambda v, w: evaluation.to_encoder_frame(
        model.generator.apply(v["generator"], w, input_is_latent=True, noise_mode="const"), hw))

    def encode(x):
        return enc_j(variables, x)

    def generate(w):
        return gen_j(variables, w)

    distort = jax.jit(lambda lv, x, y: evaluation.lpips_per_image(lv, x, y, net))
    features = jax.jit(evaluation.inception_features)
    lpips_vars = sharding.replicate(lpips_vars, mesh) if lpips_vars is not None else None
    inc_vars = sharding.replicate(inc_vars, mesh) if inc_vars is not None else None

    per = {k: [] for k in ("l2", "lpips", "variation", "delta")}
    lec = [[] for _ in edits]
    feats_real, feats_fake, done, skipped = [], [], [], list(listing_skipped)
    swd_real, swd_fake = evaluation.SWDDescriptors(hw[0], args.seed), evaluation.SWDDescriptors(hw[0], args.seed + 1)
    batches = folder.iter_batches(paths, bs, hw, num_workers=args.workers)
    with tqdm(total=len(paths), desc="evaluate", unit="img") as bar:
        for images, batch_paths, batch_skipped in batches:
            for s in batch_skipped:
                tqdm.write(f"skipped {s.path}: {s.reason}", file=sys.stderr)
            skipped.extend(batch_skipped)
            b = images.shape[0]
            bar.update(len(batch_skipped))
            if b == 0:
                continue
            x = sharding.shard_batch(sharding.pad_batch(images, bs), mesh)
            if args.inversions is None:
                codes = encode(x)
                recon = generate(codes)
            else:
                idx = [index[Path(p)] for p in batch_paths]
                codes = inv_latents[idx]
                # The saved inversions, read as calc_losses_on_images.py reads them; rendered if absent.
                pngs = [inv_pngs[i] and folder.load_image(inv_pngs[i], hw) for i in idx]
                for i, im in zip(idx, pngs):
                    if isinstance(im, folder.Skipped):
                        raise UserError(f"reconstruction {im.path} of {paths[i]} cannot be read ({im.reason}); "
                                        "rerun `e4e-jax invert`")
                if all(isinstance(im, np.ndarray) for im in pngs):
                    recon = np.stack(pngs)
                else:
                    recon = np.array(generate(sharding.shard_batch(sharding.pad_batch(codes, bs), mesh)))[:b]
                    for j, im in enumerate(pngs):
                        if isinstance(im, np.ndarray):
                            recon[j] = im
            codes_full = np.asarray(codes)
            codes, recon = codes_full[:b], np.asarray(recon)[:b]
            per["l2"].append(np.asarray(evaluation.l2_per_image(images, recon)))
            if lpips_vars is not None:
                per["lpips"].append(np.asarray(distort(lpips_vars, x, sharding.pad_batch(recon, bs)))[:b])
            per["variation"].append(np.asarray(evaluation.latent_variation(codes)))
            per["delta"].append(np.asarray(evaluation.delta_norm(codes)))
            swd_real.add(images)
            swd_fake.add(recon)
            if inc_vars is not None:
                feats_real.append(np.asarray(features(inc_vars, x))[:b])
                feats_fake.append(np.asarray(features(inc_vars, sharding.pad_batch(recon, bs)))[:b])
            for k, (_, f, inv) in enumerate(edits):  # E(x) of the originals: the codes above (padded)
                full = sharding.shard_batch(sharding.pad_batch(codes_full, bs), mesh)
                lec[k].append(np.asarray(evaluation.lec_distances(encode, generate, None, f, inv, codes=full))[:b])
            done.extend(batch_paths)
            bar.update(b)
    if not done:
        print("error: no image could be evaluated (all skipped)", file=sys.stderr)
        return EXIT_NOTHING

    cat = {k: np.concatenate(v) if v else None for k, v in per.items()}
    notes = {}
    report = {"model": str(args.model), "images": str(args.images or ""), "inversions": str(args.inversions or ""),
              "n_images": len(done), "n_skipped": len(skipped),
              "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped]}
    report["distortion"] = {"l2": float(cat["l2"].mean()), "l2_std": float(cat["l2"].std())}
    if cat["lpips"] is not None:
        report["distortion"].update(lpips=float(cat["lpips"].mean()), lpips_std=float(cat["lpips"].std()), net=net)
    else:
        notes["lpips"] = LPIPS_HELP
    report["distortion"]["per_image"] = {
        Path(p).name: {"l2": float(cat["l2"][i]),
                       **({"lpips": float(cat["lpips"][i])} if cat["lpips"] is not None else {})}
        for i, p in enumerate(done)}

    perception = {}
    if inc_vars is None:
        notes["fid"] = FID_HELP
    elif len(done) < 2:
        notes["fid"] = "FID needs at least 2 images"
    else:
        perception["fid"] = evaluation.fid_from_features(np.concatenate(feats_real), np.concatenate(feats_fake))
        if len(done) < 2048:
            notes["fid_sample_size"] = (f"FID from {len(done)} < 2048 images uses rank-deficient covariances and is "
                                        "strongly biased by N: compare FIDs only at equal N")
    s = evaluation.swd(swd_real, swd_fake, seed=args.seed + 2)
    perception.update(swd=s["SWDx1e3_avg"], swd_per_resolution=s)
    report["perception"] = perception

    if edits:
        per_edit = {}
        for (name, _, _), d in zip(edits, lec):
            d = np.concatenate(d)
            try:
                per_edit[name] = {"lec": evaluation.lec_score(d, args.lec_batch), "mean_unfiltered": float(d.mean())}
            except ValueError as e:
                notes[f"lec {name}"] = str(e)
        scores = [v["lec"] for v in per_edit.values()]
        report["editability"] = {"lec": float(np.mean(scores)) if scores else None, "edits": per_edit,
                                 "lec_batch": args.lec_batch}
    else:
        notes["lec"] = "LEC needs edits: pass --directions age.pt ... and/or --ganspace PCA --ganspace-edit ..."

    latent = {"variation": float(cat["variation"].mean()), "delta_norm": float(cat["delta"].mean())}
    if args.num_samples:
        cfg = model.gen_config
        map_j = jax.jit(lambda v, z: model.generator.apply(v["generator"], z, method="map"))

        def recover(key):
            w = evaluation.sample_w(lambda z: map_j(variables, z), key, bs, cfg.mapping_in_dim, cfg.n_latent)
            return evaluation.latent_recovery_distances(encode, generate, sharding.shard_batch(w, mesh))

        key, dists = jax.random.key(args.seed), []
        with tqdm(total=args.num_samples, desc="E(G(w))", unit="w") as bar:
            while sum(map(len, dists)) < args.num_samples:
                key, sub = jax.random.split(key)
                dists.append(np.asarray(recover(sub))[: args.num_samples - sum(map(len, dists))])
                bar.update(len(dists[-1]))
        latent.update(recovery=float(np.concatenate(dists).mean()), recovery_samples=args.num_samples)
    report["latent"] = latent
    report["notes"] = notes

    out = evaluation.write_report(args.output / "metrics.json", report)
    name = args.name or Path(args.model).name
    print(evaluation.format_table({name: report}))
    for k, v in notes.items():
        print(f"note ({k}): {v}")
    print(f"wrote {out}")
    return EXIT_PARTIAL if skipped else EXIT_OK
