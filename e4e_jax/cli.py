"""The `e4e-jax` command (docs/architecture.md, "Command line"). Each sub-command lives in
`e4e_jax/commands/<name>.py`: `add_parser(sub, help)` declares its arguments, `run(args)` does the work
through the library and returns an exit code (e4e_jax/errors.py)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-commands in help order. Every command module is imported to build the parser; they import JAX and
# the models only inside `run`, so `e4e-jax --help` and argument errors answer without JAX's start-up.
COMMANDS = {
    "quickstart": "run the whole system on the embedded default (a small fixed-seed StyleGAN2) on CPU",
    "synthesize": "render images from latents with a stylegan2 (or e4e) bundle",
    "align": "FFHQ-align the faces in a folder of photos (the align extra: dlib)",
    "invert": "invert a folder of images with an e4e bundle",
    "tune": "pivotal tuning (PTI) of inverted photos: one small tuned generator each",
    "edit": "edit inverted latents (InterFaceGAN, GANSpace, SeFa)",
    "train": "train an e4e encoder",
    "evaluate": "compute the paper's metrics",
    "studio": "an interactive editing page: photo in, live sliders (the studio extra: Gradio)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e4e-jax",
        description="e4e (Designing an Encoder for StyleGAN Image "
        "Manipulation) in JAX: inversion, editing, training, evaluation.",
    )
    from e4e_jax import __version__

    parser.add_argument("--version", action="version", version=f"e4e-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        importlib.import_module(f"e4e_jax.commands.{name}").add_parser(sub, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run the command; the project's own errors (`errors.UserError`) become one line and their
    exit code, Ctrl-C one line and exit 130, any other exception is a bug and keeps its traceback."""
    from e4e_jax.errors import EXIT_INTERRUPTED, EXIT_OK, UserError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or EXIT_OK)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C: one line, with what a command keeps (its `on_interrupt` default)
        hint = getattr(args, "on_interrupt", None)
        print(f"\ninterrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
