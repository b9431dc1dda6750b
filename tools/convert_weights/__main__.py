"""Command line of the standalone converters: ``python -m tools.convert_weights KIND SRC... --out DIR``.

Each KIND names a module of this package exposing::

    convert(sources: list[pathlib.Path], **options) -> (architecture: dict, variables: dict, extra: dict)

This file only parses arguments and writes the resulting bundle (atomically).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from tools.convert_weights import CONVERTER_VERSION

# KIND -> (module, help, bundle kind)
CONVERTERS = {
    "stylegan2": ("tools.convert_weights.stylegan2", "rosinality .pt (g_ema) or NVlabs stylegan2-ada .pkl (G_ema)"),
    "e4e": ("tools.convert_weights.e4e", "official e4e / pSp checkpoint (.pt)"),
    "lpips": ("tools.convert_weights.lpips", "lpips v0.1 head (alex.pth|vgg.pth) + torchvision backbone state dict"),
    "arcface": ("tools.convert_weights.arcface", "ArcFace IR-SE50 model_ir_se50.pth"),
    "moco": ("tools.convert_weights.moco", "MoCo-v2 ResNet-50 checkpoint (moco_v2_800ep_pretrain.pt)"),
    "inception": ("tools.convert_weights.inception", "pytorch-fid FID Inception-v3 weights (pt_inception-2015-12-05-*.pth)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.convert_weights",
        description="Convert official PyTorch checkpoints into e4e-jax model bundles. "
        "Checkpoints are read without torch and without running any code they contain.",
    )
    p.add_argument("kind", choices=sorted(CONVERTERS), help="what the source checkpoint holds")
    p.add_argument("sources", nargs="+", type=Path, help="source checkpoint file(s)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="converter-specific option (e.g. --option net=vgg for lpips); may repeat",
    )
    return p


def _parse_options(pairs: list[str]) -> dict[str, str]:
    opts = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--option expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        opts[k.strip()] = v.strip()
    return opts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from e4e_jax import bundle
    from tools.convert_weights.safe_torch import CheckpointError

    for src in args.sources:
        if not src.is_file():
            print(f"error: {src}: no such file", file=sys.stderr)
            return 2
    module = importlib.import_module(CONVERTERS[args.kind][0])
    try:
        architecture, variables, extra = module.convert(list(args.sources), **_parse_options(args.option))
    except (CheckpointError, ValueError, KeyError) as e:
        # KeyError's str() adds quotes; print the message as written.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1
    extra = dict(extra or {})
    extra["converter_version"] = CONVERTER_VERSION
    out = bundle.save(
        args.out,
        kind=extra.pop("bundle_kind", args.kind),
        architecture=architecture,
        variables=variables,
        sources=bundle.source_info(*args.sources),
        extra=extra,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.kind} bundle to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
