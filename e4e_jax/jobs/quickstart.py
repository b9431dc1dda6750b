"""`run_quickstart(options)`: the whole system on the embedded default, on CPU, in minutes (the
`quickstart` command; its --help tells the four stages): train a tiny e4e encoder on the samples of a
fixed-seed StyleGAN2, invert held-out samples, edit them along the strongest SeFa direction, and write
WORKDIR/quickstart_grid.png, WORKDIR/metrics.json and what to run next.

Returns the exit code (e4e_jax/errors.py); bad inputs raise UserError before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from e4e_jax.choices import QUICKSTART_HELDOUT as N_HELDOUT
from e4e_jax.choices import QUICKSTART_STEPS
from e4e_jax.errors import EXIT_NOTHING, EXIT_OK, UserError
from e4e_jax.options import option
from e4e_jax.storage import manifest

if TYPE_CHECKING:
    import numpy as np

HELDOUT_SEED = 10_000  # far from the training stream's seeds
INVERT_BATCH = 8  # the held-out samples are inverted in batches of at most this many
TEXT_WIDTH = 100  # columns of the printed explanations
GRID_NAME, METRICS_NAME = "quickstart_grid.png", "metrics.json"  # in WORKDIR
WHAT_IT_IS = (
    "The quickstart model is a toy: a {size}x{size} StyleGAN2 with fixed-seed random weights (it draws colour "
    "blobs, not faces) and an e4e encoder trained on its samples against a random-weight LPIPS network (the "
    'identity loss is off at this size). Real photos need the official checkpoints, converted (README.md, "Using '
    'official checkpoints").'
)
SEFA_STRENGTHS = (-6.0, -3.0, 3.0, 6.0)  # steps along the strongest SeFa direction, in the grid's columns
# What quickstart writes into WORKDIR (e4e_jax/storage/outdir.py marks the folder as its own).
OUTPUT_NAMES = (manifest.QUICKSTART_TRAIN_DIR, "heldout", "inversion", "edits", GRID_NAME, METRICS_NAME)


@dataclasses.dataclass(frozen=True)
class QuickstartOptions:
    """One quickstart; each field is an `e4e-jax quickstart` option, declared once (e4e_jax/options.py)."""

    workdir: Path = option(type="path", help="output folder (created; must be new or empty)")
    steps: int = option(
        QUICKSTART_STEPS,
        type="positive_int",
        help=f"training steps (default {QUICKSTART_STEPS}; more steps give better inversions)",
    )
    heldout: int = option(
        N_HELDOUT, type="positive_int", help=f"held-out samples to invert and edit (default {N_HELDOUT})"
    )


def write_heldout_samples(model_dir: Path, out: Path, n: int) -> "np.ndarray":
    """Render n samples G(mapping(z)) of the bundle's generator, z from a held-out seed, as PNGs.

    Returns their true W+ codes (n, n_latent, D).
    """
    import jax
    import numpy as np

    from e4e_jax.images import save_png
    from e4e_jax.inference import render
    from e4e_jax.models.stylegan2 import Generator

    cfg, variables = render.generator_of_bundle(str(model_dir))
    z = jax.random.normal(jax.random.key(HELDOUT_SEED), (n, cfg.mapping_in_dim))
    w = Generator(cfg).apply(variables, z, method=Generator.map)
    ws = np.repeat(np.asarray(w)[:, None], cfg.n_latent, axis=1)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(np.concatenate(list(render.iter_synthesize(cfg, variables, ws)))):
        save_png(out / f"sample_{i:03d}.png", img)
    return ws


def latent_metrics(true_ws, inverted_ws) -> dict:
    """Latent recovery ‖E(G(w)) − w‖ (held-out w known exactly) and latent variation of the codes."""
    import numpy as np

    from e4e_jax.metrics import definitions

    rec = np.asarray(definitions.latent_distance(inverted_ws, true_ws))
    var = np.asarray(definitions.latent_variation(inverted_ws))
    return {
        "latent_recovery_mean": float(rec.mean()),
        "latent_variation_mean": float(var.mean()),
        "delta_norm_mean": float(np.asarray(definitions.delta_norm(inverted_ws)).mean()),
    }


def l2_curve(metrics_jsonl: Path, key: str = "train/loss_l2") -> dict:
    """Mean training L2 over the first and the last quarter of the logged values (did it learn?)."""
    vals = []
    for line in metrics_jsonl.read_text().splitlines():
        row = json.loads(line)
        if key in row:
            vals.append(float(row[key]))
    if not vals:
        return {}
    q = max(1, len(vals) // 4)
    return {
        "train_l2_first_quarter": sum(vals[:q]) / q,
        "train_l2_last_quarter": sum(vals[-q:]) / q,
        "train_l2_logged": len(vals),
    }


def average_code_l2(model_dir: Path, heldout: Path) -> float:
    """Per-pixel L2 of the trivial inversion: every held-out sample answered by G(latent_avg)."""
    import numpy as np

    from e4e_jax.data.folder import load_image
    from e4e_jax.inference import render
    from e4e_jax.storage.bundle import load

    cfg, gen_vars = render.generator_of_bundle(str(model_dir))
    latent_avg = np.asarray(load(model_dir, "e4e")[1]["latent_avg"], np.float32).reshape(-1, cfg.style_dim)
    ws = np.broadcast_to(latent_avg[: cfg.n_latent], (cfg.n_latent, cfg.style_dim))[None]  # (1, n_latent, D)
    avg = np.concatenate(list(render.iter_synthesize(cfg, gen_vars, np.ascontiguousarray(ws))))[0]
    files = sorted(heldout.glob("*.png"))
    return float(np.mean([np.mean((load_image(f, avg.shape[:2]) - np.clip(avg, -1, 1)) ** 2) for f in files]))


def image_metrics(heldout: Path, inversion: Path) -> dict:
    """Per-pixel L2 (MSE in [-1, 1]) between each held-out sample and its inversion (the reconstruction
    `invert` saved for it, exactly as its manifests list it)."""
    import numpy as np

    from e4e_jax.data.folder import load_image

    files = manifest.read_lines(inversion / manifest.FILES)
    recon = manifest.reconstructions(inversion, files)
    errs = []
    for src, rec in zip(files, recon):
        if rec is None:
            raise UserError(f"{inversion}: no reconstruction saved for {src}")
        hw = load_image_size(rec)
        a, b = load_image(src, hw), load_image(rec, hw)
        errs.append(float(np.mean((a - b) ** 2)))
    return {"l2_mean": float(np.mean(errs)), "n_images": len(errs)}


def load_image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def what_it_is(size: int) -> str:
    """WHAT_IT_IS for a generator of `size`, wrapped for a terminal."""
    import textwrap

    return textwrap.fill(WHAT_IT_IS.format(size=size), TEXT_WIDTH)


def check_heldout_fits(n: int, cfg) -> None:
    """UserError when `n` held-out samples (their z, codes and images, held at once) cannot fit in memory."""
    from e4e_jax.inference import render
    from e4e_jax.runtime import memory

    memory.require_room(
        2 * render.synthesis_bytes(cfg, n, activations=False),
        f"--heldout {n} ({n} samples of {cfg.size}x{cfg.size} rendered and inverted)",
        f"pass a smaller --heldout (default {N_HELDOUT})",
    )


def closing_block(work: Path, size: int, grid_columns: str) -> str:
    """What the quickstart leaves and what to run next: the model, the pictures, the commands (which run
    from inside `work`)."""
    import shlex

    train = Path(manifest.QUICKSTART_TRAIN_DIR)
    model = (train / manifest.TRAIN_MODEL_DIR).as_posix()
    made = [
        ("model", f"{model}   an e4e bundle: the --model of every command"),
        ("grid", f"{GRID_NAME}   columns: {grid_columns}"),
    ]
    if (work / train / manifest.LOSS_CURVE).is_file():
        made.append(("loss curve", (train / manifest.LOSS_CURVE).as_posix()))
    made.append(("metrics", METRICS_NAME))
    lines = ["", what_it_is(size), "", f"In {work}:"]
    lines += [f"  {k:<11}{v}" for k, v in made]
    lines += [
        "",
        "Next steps with this model:",
        f"  cd {shlex.quote(str(work))}",
        f"  e4e-jax invert --model {model} --images heldout --output inverted",
        f"  e4e-jax edit --model {model} --latents inverted --output edited --sefa 1 --layers all --strengths -5 5",
        f"  e4e-jax evaluate --model {model} --inversions inverted --output evaluation",
        f"  e4e-jax studio --model {model}",
    ]
    return "\n".join(lines)


def run_quickstart(args: QuickstartOptions) -> int:
    from e4e_jax.configs import tiny
    from e4e_jax.models.stylegan2 import StyleGAN2Config
    from e4e_jax.storage import outdir

    gen = {k: v for k, v in tiny.get_config().generator.random_init.items() if k != "seed"}
    check_heldout_fits(args.heldout, StyleGAN2Config(**gen))
    outputs = outdir.Outputs("quickstart", OUTPUT_NAMES)
    work = args.workdir.resolve()
    with outdir.claim(work, "e4e-jax quickstart", outputs=outputs, flag="--workdir"):  # one quickstart per folder
        if not outdir.is_empty_dir(work):
            raise UserError(f"--workdir {work} is not empty; choose a new folder")
        return _pipeline(args, work)


def _pipeline(args: QuickstartOptions, work: Path) -> int:
    import numpy as np

    from e4e_jax.configs import tiny
    from e4e_jax.jobs import edit as edit_job
    from e4e_jax.jobs.invert import job
    from e4e_jax.storage import fileio, manifest
    from e4e_jax.training import train_and_evaluate

    config = tiny.get_config()
    config.max_steps = args.steps
    size = config.generator.random_init["size"]
    print(what_it_is(size), flush=True)
    print(
        f"[1/4] training an e4e encoder on samples of a fixed-seed {size}² StyleGAN2 for {config.max_steps} "
        "steps (every loss of the paper)",
        flush=True,
    )
    train_dir = work / manifest.QUICKSTART_TRAIN_DIR
    train_metrics = train_and_evaluate(config, train_dir)
    model = train_dir / manifest.TRAIN_MODEL_DIR

    print(f"[2/4] inverting {args.heldout} held-out samples", flush=True)
    true_ws = write_heldout_samples(model, work / "heldout", args.heldout)
    rc = job.invert_folder(
        job.InvertOptions(
            model=str(model),
            images=work / "heldout",
            output=work / "inversion",
            batch_size=min(args.heldout, INVERT_BATCH),
            image_format="png",
        )
    )  # lossless: the L2 below measures the inversion, not JPEG
    if rc != EXIT_OK:
        print(f"error: inversion failed with exit status {rc}", file=sys.stderr)
        return EXIT_NOTHING

    print("[3/4] editing the inversions along the strongest SeFa direction", flush=True)
    edit_opts = edit_job.EditOptions(
        model=str(model),
        latents=work / "inversion",
        output=work / "edits",
        sefa=0,
        layers="all",
        strengths=SEFA_STRENGTHS,
    )
    rc = edit_job.edit_folder(edit_opts)
    if rc != EXIT_OK:
        print(f"error: editing failed with exit status {rc}", file=sys.stderr)
        return EXIT_NOTHING
    fileio.write_bytes(work / GRID_NAME, (work / "edits" / "grid.png").read_bytes())
    strengths = " | ".join(edit_job.column_labels(edit_opts))

    print("[4/4] metrics", flush=True)
    inverted_ws = np.load(work / "inversion" / manifest.LATENTS)
    metrics = {
        "training": {k: float(v) for k, v in (train_metrics or {}).items() if isinstance(v, (int, float, np.floating))},
        "learning": l2_curve(train_dir / manifest.TRAINING_LOG),
        "heldout": {
            **image_metrics(work / "heldout", work / "inversion"),
            "l2_mean_if_answered_by_latent_avg": average_code_l2(model, work / "heldout"),
            **latent_metrics(true_ws, inverted_ws),
        },
        "notes": heldout_notes(args.heldout),
    }
    fileio.write_text(work / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics["heldout"], indent=2))
    learn, held = metrics["learning"], metrics["heldout"]
    if learn:
        print(
            f"training L2: {learn['train_l2_first_quarter']:.3f} (first quarter of the run) -> "
            f"{learn['train_l2_last_quarter']:.3f} (last quarter)"
        )
    print(
        f"held-out L2: {held['l2_mean']:.3f} inverted vs {held['l2_mean_if_answered_by_latent_avg']:.3f} "
        f"for G(latent_avg)"
    )
    print(closing_block(work, size, f"source | inversion | {strengths}"))
    return EXIT_OK


def heldout_notes(n: int) -> dict:
    """What the held-out figures measure, and how they differ from `e4e-jax evaluate`'s."""
    return {
        "l2_mean": "per-pixel MSE in [-1, 1] between each held-out sample's PNG and the PNG invert saved of its "
        "inversion (both 8-bit): what `e4e-jax evaluate --inversions` measures (distortion.measured_on "
        "'saved'); evaluate without --inversions compares with the generator's unclipped output instead",
        "latent_recovery_mean": f"mean ||E(x) - w|| over these {n} held-out samples x = G(w) (z drawn from seed "
        f"{HELDOUT_SEED}), x read back from its 8-bit PNG; `e4e-jax evaluate`'s E(G(w)) draws --num-samples "
        "other w (from --seed) and encodes G(w) unquantised, so the two differ",
    }
