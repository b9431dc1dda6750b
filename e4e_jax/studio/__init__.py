"""`e4e-jax studio`: an interactive editing page over the one editing API (`e4e_jax.inference.editor.Editor`).

    serve(StudioOptions(model=...))    # checks, compiles every shape once, then serves until Ctrl-C

`session.py` is what the page does (no Gradio), `app.py` the page itself (Gradio, the `studio` extra),
`preview.py` the live preview's bytes. Binds 127.0.0.1 unless another host is asked for.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Optional

from e4e_jax import choices
from e4e_jax.errors import UserError
from e4e_jax.options import option

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
# Gradio and the Hugging Face hub would otherwise phone home (this machine reaches no such host).
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@dataclasses.dataclass(frozen=True)
class StudioOptions:
    """The `e4e-jax studio` options, each declared once (e4e_jax/options.py): the parser comes from them."""

    model: str = option(type="path_text", help="e4e bundle (the quickstart's: WORKDIR/train/model)")
    images: Optional[Path] = option(None, type="path", help="a folder of photos to pick from on the page")
    directions: Optional[Path] = option(
        None,
        type="path",
        help="a folder of InterFaceGAN directions (.pt / .npy) and GANSpace PCA files (e.g. the official "
        "editings/ folder); files that do not fit the generator are listed on the page",
    )
    lpips: Optional[str] = option(None, type="path_text", help="an lpips bundle: also show the reconstruction's LPIPS")
    host: str = option(
        DEFAULT_HOST,
        help=f"address to serve on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens it to the network)",
    )
    port: int = option(DEFAULT_PORT, type=("int_in", 1, 65535), help=f"port (default {DEFAULT_PORT})")
    dtype: str = option("float32", choices=choices.DTYPE_NAMES, help="compute dtype")
    modulation: str = option("auto", choices=choices.MODULATIONS, help="modulated-conv formulation (same maths)")
    no_align: bool = option(False, help="do not FFHQ-align photos of face domains (they must be aligned)")
    align_size: int = option(
        1024,
        type="positive_int",
        help="size of the aligned crop before the encoder's resize (default 1024, as invert --align)",
    )
    landmarks: Optional[str] = option(
        None, type="path_text", help="dlib 68-point landmark model file (default: the packaged one)"
    )
    compile_cache: Optional[str] = option(
        None,
        type="path_text",
        metavar="DIR",
        help="JAX persistent compilation cache (default: $E4E_JAX_CACHE_DIR or ~/.cache/e4e-jax/xla)",
    )  # "" switches the cache off

    @property
    def align(self) -> Optional[bool]:
        """False with --no-align; None: align photos of face domains (the Editor decides from the domain)."""
        return False if self.no_align else None


def import_gradio():
    """gradio, or a UserError saying how to install it."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import gradio
    except ImportError as e:
        raise UserError(f"the studio needs Gradio ({e}): pip install 'e4e-jax[studio]'") from None
    return gradio


def check(opts: StudioOptions) -> None:
    """Every check that needs no weights: the folders and the bundles' kinds."""
    from e4e_jax.storage import bundle

    for flag, folder in (("--images", opts.images), ("--directions", opts.directions)):
        if folder is not None and not Path(folder).is_dir():
            raise UserError(f"{flag} {folder} is not a folder")
    bundle.read_config(opts.model)  # a wrong --model (e.g. a work directory) is named here
    if opts.lpips is not None:
        bundle.read_config(opts.lpips, "lpips")


def serve(opts: StudioOptions) -> int:
    """Check, build the Editor (compiling every shape), then serve the page until interrupted."""
    check(opts)
    import_gradio()
    from e4e_jax.inference.editor import Editor
    from e4e_jax.runtime import compile_cache
    from e4e_jax.studio import app
    from e4e_jax.studio.session import Studio

    if opts.compile_cache != "":
        compile_cache.enable(opts.compile_cache)
    editor = Editor(
        opts.model,
        dtype=opts.dtype,
        modulation=opts.modulation,
        directions_dir=opts.directions,
        align=opts.align,
        align_size=opts.align_size,
        landmarks=opts.landmarks,
        lpips=opts.lpips,
    )
    for note in editor.notes:
        print(f"note: {note}", file=sys.stderr)
    studio = Studio(editor, opts.images)
    t = editor.timings
    print(
        f"loaded {opts.model} in {t.load_s:.1f} s, compiled in {t.compile_s:.1f} s; "
        f"{len(editor.directions)} directions",
        file=sys.stderr,
        flush=True,
    )
    page = app.build(studio)
    page.queue(default_concurrency_limit=1)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the page as Ctrl-C does, removing its files
    try:
        page.launch(
            server_name=opts.host,
            server_port=opts.port,
            inbrowser=False,
            show_error=True,
            allowed_paths=[str(studio.workdir)],
            quiet=False,
        )
    finally:
        shutil.rmtree(studio.workdir, ignore_errors=True)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
