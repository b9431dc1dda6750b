"""Command line of the standalone converters: ``python -m tools.convert_weights KIND SRC... --out DIR``.

Each KIND names a module of this package exposing::

    convert(sources: list[pathlib.Path], **options) -> (architecture: dict, variables: dict, extra: dict)

This file only parses arguments and writes the resulting bundle (atomically).
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m`: start in the entry point, which handles Ctrl-C from before the
    from . import entry  # imports below (they load JAX) and imports this module again by its name

    entry()

import argparse
import importlib
import os
from pathlib import Path

from e4e_jax.commands import cli_args
from e4e_jax.errors import EXIT_OK, UserError
from e4e_jax.models.encoder_types import ENCODER_TYPES, RESTYLE_ENCODER_TYPES
from e4e_jax.models.latent_avg import W_AVG_SAMPLES
from e4e_jax.storage.restyle_bundle import DEFAULT_ITERATIONS

from . import CONVERTER_VERSION

# KIND -> (module of this package, help of its sources, {option: (type, metavar, help)}). The option names are
# the keyword arguments of the module's `convert`; they are typed and checked here, before any file is read.
CONVERTERS = {
    "stylegan2": (
        "stylegan2",
        "rosinality .pt (g_ema) or NVlabs stylegan2-ada .pkl (G_ema)",
        {
            "w_avg_samples": (
                cli_args.positive_int,
                "N",
                f"mapped z averaged for w_avg when a .pt has no latent_avg (default {W_AVG_SAMPLES}, as official pSp)",
            )
        },
    ),
    "e4e": (
        "e4e",
        "official e4e / pSp checkpoint (.pt)",
        {
            "encoder_type": (
                cli_args.choice(*ENCODER_TYPES),
                "|".join(ENCODER_TYPES),
                "encoder class when the checkpoint's opts do not name it (default Encoder4Editing)",
            ),
            "latent_avg_samples": (
                cli_args.positive_int,
                "N",
                f"mapped z averaged for latent_avg when the checkpoint has none (default {W_AVG_SAMPLES})",
            ),
        },
    ),
    "restyle": (
        "restyle",
        "official ReStyle checkpoint (.pt: restyle_e4e_*, restyle_psp_*)",
        {
            "iterations": (
                cli_args.positive_int,
                "N",
                f"the bundle's default number of refinement iterations (default {DEFAULT_ITERATIONS}, as official "
                "inference)",
            ),
            "encoder_type": (
                cli_args.choice(*RESTYLE_ENCODER_TYPES),
                "|".join(RESTYLE_ENCODER_TYPES),
                "encoder class when the checkpoint's opts do not name it",
            ),
        },
    ),
    "lpips": (
        "lpips",
        "lpips v0.1 head (alex.pth|vgg.pth) + torchvision backbone state dict",
        {"net": (cli_args.choice("alex", "vgg"), "alex|vgg", "backbone (default: inferred from the weights' shapes)")},
    ),
    "arcface": ("arcface", "ArcFace IR-SE50 model_ir_se50.pth", {}),
    "moco": ("moco", "MoCo-v2 ResNet-50 checkpoint (moco_v2_800ep_pretrain.pt)", {}),
    "inception": ("inception", "pytorch-fid FID Inception-v3 weights (pt_inception-2015-12-05-*.pth)", {}),
}


LOADED_POINT = (
    "convert-loaded"  # pause point (e4e_jax/runtime/pause_points.py): the checkpoint is read, nothing written
)
# As the user typed it: from the repository, or the console script of the installed e4e_jax_tools package.
PROG = "python -m tools.convert_weights" if __package__ == "tools.convert_weights" else "e4e-convert"


def _options_help() -> str:
    lines = ["kinds, their sources and --option settings:"]
    for kind, (_, sources, options) in CONVERTERS.items():
        lines.append(f"  {kind}: {sources}")
        lines.extend(f"      --option {key}={metavar}: {text}" for key, (_, metavar, text) in options.items())
        if not options:
            lines.append("      (no options)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert official PyTorch checkpoints into e4e-jax model bundles. "
        "Checkpoints are read without torch and without running any code they contain.",
        epilog=_options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", choices=sorted(CONVERTERS), help="what the source checkpoint holds (see below)")
    p.add_argument("sources", nargs="+", type=cli_args.path, help="source checkpoint file(s)")
    p.add_argument("--out", type=cli_args.path, required=True, help="bundle directory to create")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing bundle at --out (never a folder that is not a bundle)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="converter-specific setting (listed below per kind, e.g. --option net=vgg for lpips); may repeat",
    )
    p.set_defaults(on_interrupt="nothing was written to --out (a bundle appears whole or not at all)")
    return p


def parse_options(kind: str, pairs: list[str]) -> dict:
    """--option KEY=VALUE settings of converter `kind`, typed; UserError for unknown keys or bad values."""
    known = CONVERTERS[kind][2]
    opts = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--option expects KEY=VALUE, got {pair!r}")
        k, v = (part.strip() for part in pair.split("=", 1))
        if k not in known:
            supported = ", ".join(sorted(known)) or "none"
            raise UserError(f"--option {k}: not an option of the {kind} converter (its options: {supported})")
        try:
            opts[k] = known[k][0](v)  # the option's type
        except argparse.ArgumentTypeError as e:
            raise UserError(f"--option {k}={v}: {e}") from None
    return opts


def check_sources(sources: list[Path]) -> None:
    """Each source is a readable file (UserError naming it otherwise)."""
    for src in sources:
        if src.is_dir():
            raise UserError(f"{src} is a folder; pass the checkpoint file itself (e.g. {src}/model.pt)")
        if not src.exists():
            raise UserError(f"{src}: no such file")
        if not src.is_file():
            raise UserError(f"{src} is not a regular file; pass a checkpoint file")
        if not os.access(src, os.R_OK):
            raise UserError(f"{src} cannot be read (permission denied); fix its permissions or copy it")


def main(argv: list[str] | None = None) -> int:
    """Convert; the project's errors (bad files, options, --out) become one line `error: ...`, exit 2;
    Ctrl-C at any moment one line, exit 130 (e4e_jax/runtime/interrupts.py)."""
    from e4e_jax.runtime import interrupts

    return interrupts.run_command(lambda: build_parser().parse_args(argv), run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.runtime import pause_points
    from e4e_jax.storage import bundle, outdir

    options = parse_options(args.kind, args.option)
    check_sources(args.sources)
    # Fail before the (long) conversion: --out may not hold a source (--overwrite would delete it), must
    # be writable, and replaces an old bundle only with --overwrite.
    outdir.refuse_input_overlap(args.out, args.sources, "--out")
    outdir.refuse_unwritable(args.out, "--out")
    bundle.check_replaceable(args.out.absolute(), args.overwrite)
    module = importlib.import_module(f".{CONVERTERS[args.kind][0]}", __package__)
    names = ", ".join(map(str, args.sources))
    try:
        architecture, variables, extra = module.convert(list(args.sources), **options)
    except (ValueError, KeyError) as e:  # the converters' own errors: each names the file and the problem
        # KeyError's str() adds quotes; print the message as written.
        raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e
    except OSError as e:
        raise UserError(f"{e.filename or names}: cannot read ({e.strerror or e})") from e
    pause_points.reached(LOADED_POINT)
    extra = dict(extra or {})
    extra["converter_version"] = CONVERTER_VERSION
    kind = extra.pop("bundle_kind", args.kind)
    bundle.check_variables(kind, architecture, variables, f"the {kind} weights converted from {names}")
    out = bundle.save(
        args.out,
        kind=kind,
        architecture=architecture,
        variables=variables,
        sources=bundle.source_info(*args.sources),
        extra=extra,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.kind} bundle to {out}")
    return EXIT_OK
