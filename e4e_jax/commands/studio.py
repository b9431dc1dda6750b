"""`e4e-jax studio`: an interactive editing page: photo in, one slider per direction, the edit follows.

    e4e-jax studio --model E4E_BUNDLE [--images DIR] [--directions DIR] [--lpips BUNDLE]

Opens a local web page (Gradio, the `studio` extra: pip install -e '.[studio]') at http://127.0.0.1:7860:
upload, drop or pick a photo (face domains are FFHQ-aligned first: the `align` extra) or draw a random
sample; see it beside its inversion with the reconstruction's L2 (and LPIPS with --lpips); move the
sliders (InterFaceGAN and GANSpace files from --directions, the generator's SeFa directions); download
the edited PNG and its latent. Everything is compiled at start; a slider move compiles nothing. Named
endpoints /invert and /edit serve gradio_client (README, "Studio").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from e4e_jax import choices, cli_args

# The arguments only; the work is `e4e_jax.studio.serve`.


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.studio import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser(
        "studio",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--model", required=True, help="e4e bundle (the quickstart's: WORKDIR/train/model)")
    p.add_argument("--images", type=Path, default=None, help="a folder of photos to pick from on the page")
    p.add_argument(
        "--directions",
        type=Path,
        default=None,
        help="a folder of InterFaceGAN directions (.pt / .npy) and GANSpace PCA files (e.g. the official "
        "editings/ folder); files that do not fit the generator are listed on the page",
    )
    p.add_argument("--lpips", default=None, help="an lpips bundle: also show the reconstruction's LPIPS")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to serve on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument(
        "--port", type=cli_args.int_in(1, 65535), default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    p.add_argument("--dtype", choices=choices.DTYPE_NAMES, default="float32", help="compute dtype")
    p.add_argument(
        "--modulation", choices=choices.MODULATIONS, default="auto", help="modulated-conv formulation (same maths)"
    )
    p.add_argument(
        "--no-align", action="store_true", help="do not FFHQ-align photos of face domains (they must be aligned)"
    )
    p.add_argument(
        "--align-size",
        type=cli_args.positive_int,
        default=1024,
        help="size of the aligned crop before the encoder's resize (default 1024, as invert --align)",
    )
    p.add_argument("--landmarks", default=None, help="dlib 68-point landmark model file (default: the packaged one)")
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="JAX persistent compilation cache (default: $E4E_JAX_CACHE_DIR or ~/.cache/e4e-jax/xla)",
    )
    p.set_defaults(run=run, on_interrupt="the page is closed")


def run(args: argparse.Namespace) -> int:
    from e4e_jax.studio import StudioOptions, serve

    return serve(
        StudioOptions(
            model=args.model,
            images=args.images,
            directions=args.directions,
            lpips=args.lpips,
            host=args.host,
            port=args.port,
            dtype=args.dtype,
            modulation=args.modulation,
            align=False if args.no_align else None,
            align_size=args.align_size,
            landmarks=args.landmarks,
            compile_cache=args.compile_cache,
        )
    )
