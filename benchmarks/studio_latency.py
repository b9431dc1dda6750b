"""`e4e-jax studio` latencies (issue 26), server side, through the page's own code (`e4e_jax.studio.session`):

    python benchmarks/studio_latency.py --json $OUT/studio.jsonl                  # GPU: 1024², random, bf16
    python benchmarks/studio_latency.py --tiny --dtype float32 --json /tmp/s.jsonl # CPU smoke test
    python benchmarks/studio_latency.py --model WORKDIR/train/model --dtype float32 --json ...  # a bundle

(a) slider: one move of a slider, latent -> edited latent (directions.apply) -> preview image (the
    generator, resized on the device) -> JPEG bytes (`studio/preview.py`); median over --moves moves,
    strengths cycling so no two in a row are equal; with the split into edit / render / encode;
(b) invert: an uploaded photo (a 1024² JPEG made from the official sample photo; --photo) as the page
    handles it: decode, FFHQ alignment (face domains, dlib; else the official resize), inversion,
    L2, first preview, and the downloads (full-size PNG + latent) written; median of --inverts after
    the first, which is reported apart;
(c) start-up with the compile cache warm: a fresh process that builds the page's Editor (every shape
    compiled, from the persistent cache this run filled) until it is ready; and, where Gradio is
    installed, `e4e-jax studio` until its page answers HTTP 200.

Each figure is appended to --json as one JSON line as soon as it is known (flushed); every phase is
bounded (--phase-timeout; the start-up processes too) and a phase that fails or times out writes an
error line and the run goes on. The random bundle (--random-bundle, the default: benchmarks/invert_e2e.py's
1024² IR-SE50 e4e with random weights, dataset ffhq) is written under --work and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTO = ROOT.parent / "shared" / "assets" / "e4e" / "images" / "input_img.jpg"
PHOTO_SIZE = 1024
SLIDER_STRENGTHS = (-3.0, -1.5, 1.0, 2.5)  # cycled over the moves


class PhaseTimeout(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: int):
    """Raise PhaseTimeout in this (main) thread after `seconds`."""

    def fire(signum, frame):
        raise PhaseTimeout(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Record:
    def __init__(self, path: Path, base: dict):
        self.path, self.base = path, base
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, phase: str, **fields) -> None:
        row = {"phase": phase, **self.base, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        print(json.dumps(row), flush=True)


def stats_ms(seconds: list[float]) -> dict:
    ms = sorted(1000 * s for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
        "n": len(ms),
    }


def tiny_bundle(work: Path) -> Path:
    """A small face-domain e4e bundle for CPU smoke runs: 16² generator, toy IR-SE encoder (256² input)."""
    path = work / "bundle_tiny"
    if path.is_dir():
        return path
    import jax
    import jax.numpy as jnp
    import numpy as np

    from e4e_jax import e4e_bundle
    from e4e_jax.models.encoder_types import EncoderConfig
    from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables

    gen = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2)
    enc = EncoderConfig(mode="e4e", n_styles=gen.n_latent, widths=(16, 32, 64, 128), units=(1, 1, 1, 1))
    enc_vars = jax.jit(enc.build().init)(jax.random.key(1), jnp.zeros((1, *enc.input_size, 3)))
    latent_avg = np.asarray(jax.random.normal(jax.random.key(2), (gen.n_latent, gen.style_dim))) * 0.1
    variables = {"encoder": enc_vars, "generator": init_variables(gen, jax.random.key(0)), "latent_avg": latent_avg}
    return e4e_bundle.save(path, e4e_bundle.E4EArchitecture.create(enc, gen, "ffhq_encode"), variables)


def make_photo(work: Path, src: Path) -> Path:
    """A PHOTO_SIZE² JPEG of the sample photo (or of seeded noise when it is missing: no face then)."""
    import numpy as np
    from PIL import Image

    out = work / f"upload_{PHOTO_SIZE}.jpg"
    if src.is_file():
        Image.open(src).convert("RGB").resize((PHOTO_SIZE, PHOTO_SIZE), Image.BICUBIC).save(out, quality=95)
    else:
        noise = np.random.default_rng(0).integers(0, 255, (PHOTO_SIZE, PHOTO_SIZE, 3), np.uint8)
        Image.fromarray(noise).save(out, quality=95)
    return out


def slider_phase(rec: Record, studio, session, moves: int) -> None:
    from e4e_jax.studio import preview

    editor = studio.editor
    name = next(n for n in studio.names if n.startswith("sefa_"))
    offsets = [0.0] * (len(studio.names) + 1)
    k = studio.names.index(name)
    total, edit_s, render_s, encode_s = [], [], [], []
    for i in range(moves + 2):  # two warm-up moves (first calls allocate)
        offsets[k] = SLIDER_STRENGTHS[i % len(SLIDER_STRENGTHS)]
        t0 = time.perf_counter()
        w = studio.edited(session, offsets)
        t1 = time.perf_counter()
        img = editor.preview(w)  # np.asarray: waits for the device
        t2 = time.perf_counter()
        data = preview.encode(img)
        t3 = time.perf_counter()
        if i >= 2:
            total.append(t3 - t0)
            edit_s.append(t1 - t0)
            render_s.append(t2 - t1)
            encode_s.append(t3 - t2)
    rec.write(
        "slider",
        **stats_ms(total),
        edit_median_ms=stats_ms(edit_s)["median_ms"],
        render_median_ms=stats_ms(render_s)["median_ms"],
        encode_median_ms=stats_ms(encode_s)["median_ms"],
        preview_hw=list(editor.preview_hw),
        preview_bytes=len(data),
        direction=name,
    )


def invert_phase(rec: Record, studio, photo: Path, inverts: int) -> None:
    from e4e_jax.studio.session import Session

    times = []
    for i in range(inverts + 1):
        session = Session()
        t0 = time.perf_counter()
        studio.load_path(session, photo)
        studio.export(session, [])
        dt = time.perf_counter() - t0
        if i == 0:
            rec.write("invert_first", ms=round(1000 * dt, 3))
        else:
            times.append(dt)
    # The parts of one upload, timed apart (after the above, so all warm).
    e = studio.editor
    t0 = time.perf_counter()
    x = e.prepare(photo)
    t1 = time.perf_counter()
    inv = e.invert(x.pixels)
    t2 = time.perf_counter()
    e.preview(inv.latent)
    t3 = time.perf_counter()
    rec.write(
        "invert",
        **stats_ms(times),
        decode_align_ms=round(1000 * (t1 - t0), 3),
        invert_ms=round(1000 * (t2 - t1), 3),
        preview_ms=round(1000 * (t3 - t2), 3),
        aligned=x.crop is not None,
    )


STARTUP_SNIPPET = """
import sys, time
t0 = time.perf_counter()
from e4e_jax import compile_cache
compile_cache.enable(sys.argv[2])
from e4e_jax.editor import Editor
e = Editor(sys.argv[1], dtype=sys.argv[3], align=sys.argv[4] == "1")
print("READY", time.perf_counter() - t0, e.timings.load_s, e.timings.compile_s, flush=True)
"""


def startup_phase(rec: Record, model: Path, cache: Path, dtype: str, align: bool, timeout: int) -> None:
    """A fresh process building the Editor from the warm cache; then the whole page when Gradio is here."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", STARTUP_SNIPPET, str(model), str(cache), dtype, "1" if align else "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("READY")), None)
    if line is None:
        rec.write("startup_editor", error=(out.stderr or out.stdout)[-2000:])
    else:
        _, inside, load_s, compile_s = line.split()
        rec.write(
            "startup_editor",
            s=round(wall, 3),
            in_process_s=round(float(inside), 3),
            load_s=round(float(load_s), 3),
            compile_s=round(float(compile_s), 3),
        )
    try:
        import gradio  # noqa: F401
    except ImportError:
        rec.write("startup_page", error="gradio is not installed here; startup_editor is the page's start less Gradio")
        return
    with socket.socket() as sock:  # a free port on 127.0.0.1
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["studio", "--model", str(model), "--port", str(port), "--dtype", dtype, "--compile-cache", str(cache)]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "e4e_jax.cli", *args, *([] if align else ["--no-align"])], env=env)
    try:
        while time.perf_counter() - t0 < timeout and proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        rec.write("startup_page", s=round(time.perf_counter() - t0, 3))
                        return
            time.sleep(0.05)
        rec.write("startup_page", error=f"no answer within {timeout} s (exit {proc.poll()})")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", required=True, type=Path, help="JSON lines, appended as each figure is known")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", type=Path, help="an e4e bundle to measure (default: a random 1024² one)")
    g.add_argument("--tiny", action="store_true", help="a tiny random bundle (CPU smoke test)")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "e4e_studio_bench")
    p.add_argument("--photo", type=Path, default=PHOTO, help=f"the photo uploaded (resized to {PHOTO_SIZE}²)")
    p.add_argument("--landmarks", default=None, help="dlib 68-point model (or its .pack, dlib_model_pack.py)")
    p.add_argument("--no-align", action="store_true", help="time the invert without face alignment")
    p.add_argument("--moves", type=int, default=50)
    p.add_argument("--inverts", type=int, default=5)
    p.add_argument("--phase-timeout", type=int, default=240, help="seconds per phase (each start-up process too)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "xla_cache"
    from e4e_jax import compile_cache

    compile_cache.enable(cache)
    import jax

    rec = Record(args.json, {"device": str(jax.devices()[0].device_kind), "dtype": args.dtype})
    landmarks = args.landmarks
    if landmarks and landmarks.endswith(".pack"):
        from benchmarks import dlib_model_pack

        dlib_model_pack.unpack(Path(landmarks), args.work / "sp68.dat")
        landmarks = str(args.work / "sp68.dat")
    with bounded(args.phase_timeout):
        t0 = time.perf_counter()
        if args.model:
            model = args.model
        elif args.tiny:
            model = tiny_bundle(args.work)
        else:
            from benchmarks.invert_e2e import make_random_bundle

            model = make_random_bundle(args.work)
        rec.write("bundle", s=round(time.perf_counter() - t0, 3), model=str(model))
    from e4e_jax.editor import Editor
    from e4e_jax.studio.session import Session, Studio

    align = None if not args.no_align else False
    try:
        with bounded(args.phase_timeout):
            editor = Editor(model, dtype=args.dtype, align=align, landmarks=landmarks)
    except Exception as e:  # noqa: BLE001 - e.g. dlib missing: measure without alignment instead
        rec.write("editor", error=f"{type(e).__name__}: {e}; retrying without alignment")
        align = False
        with bounded(args.phase_timeout):
            editor = Editor(model, dtype=args.dtype, align=False)
    t = editor.timings
    rec.write("editor", load_s=round(t.load_s, 3), compile_s=round(t.compile_s, 3), align=editor.align)
    studio = Studio(editor, workdir=args.work / "session_files")
    photo = make_photo(args.work, args.photo)
    session = Session()
    phases = [
        ("invert", lambda: invert_phase(rec, studio, photo, args.inverts)),
        ("slider", lambda: (studio.load_path(session, photo), slider_phase(rec, studio, session, args.moves))),
        ("startup", lambda: startup_phase(rec, model, cache, args.dtype, editor.align, args.phase_timeout)),
    ]
    for name, run in phases:
        try:
            with bounded(args.phase_timeout + 60):
                run()
        except Exception as e:  # noqa: BLE001 - one phase's failure is a line; the others still run
            rec.write(name, error=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
