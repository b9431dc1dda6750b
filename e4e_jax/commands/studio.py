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

from e4e_jax.commands import job_options

# The arguments only; the work is `e4e_jax.studio.serve`.


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.studio import StudioOptions

    p = sub.add_parser(
        "studio",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    job_options.add_options(p, StudioOptions)
    p.set_defaults(run=run, on_interrupt="the page is closed")


def run(args: argparse.Namespace) -> int:
    from e4e_jax.studio import StudioOptions, serve

    return serve(job_options.options_from_args(StudioOptions, args))
