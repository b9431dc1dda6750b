"""Helpers of the studio tests: run `e4e-jax studio` in a subprocess on 127.0.0.1 (a free port), wait for it
to answer, stop it; the tiny face-domain bundle and direction folder it serves; bad input files.

What they need (the `studio` extra, `playwright`, Debian's `chromium`) is installed by .ci/run; elsewhere
the tests skip and say what is missing, but on CI (CI set) a missing piece is a failure."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests import tiny_bundles
from tests.assets import E4E_ASSETS

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
START_TIMEOUT_S = 900  # a loaded 2-core CI machine: Gradio's import and every compile of the page
STOP_TIMEOUT_S = 60


def require(*modules: str, browser: bool = False) -> None:
    """Skip (fail on CI) unless the Python modules (and Chromium) are installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if browser and not Path(CHROMIUM).is_file():
        missing.append("chromium (apt-get install chromium)")
    if missing:
        message = f"the studio tests need {', '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(root: Path) -> tuple[Path, Path]:
    """(the tiny face-domain e4e bundle, a --directions folder: the official age.pt, which fits, and
    pose.pt, whose 18 layers do not)."""
    model = tiny_bundles.save_e4e(root / "model")
    dirs = root / "directions"
    dirs.mkdir()
    for name in ("age.pt", "pose.pt"):
        shutil.copy(E4E_ASSETS / "interfacegan_directions" / name, dirs / name)
    return model, dirs


class Server:
    """`e4e-jax studio` in a subprocess; `url` once it answers."""

    def __init__(self, args: list[str], work: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        work.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["GRADIO_TEMP_DIR"] = str(work / "gradio")
        env["TMPDIR"] = str(work)  # the studio's session files
        self.log = work / "studio.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "e4e_jax.cli", "studio", *args, "--port", str(self.port)],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> str:
        """Poll the page until it answers 200 (or the process ends, or the time is up: a failure)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the studio exited ({self.proc.returncode}):\n{self.log.read_text()[-4000:]}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self.url
            time.sleep(0.5)  # a poll interval, not a wait for something to happen
        pytest.fail(f"the studio did not answer within {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> int:
        self.proc.terminate()  # SIGTERM: the studio closes as on Ctrl-C
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_TIMEOUT_S)


# ------------------------------------------------------------------------------------- bad input
def huge_png(path: Path, side: int = 60000) -> Path:
    """A valid side x side 1-bit PNG (all black; ~0.5 MB on disk, 3.6 G pixels), written row by row."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    rows_per_step = 1000
    parts = [z.compress(row * min(rows_per_step, side - i)) for i in range(0, side, rows_per_step)]
    idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """{case: (file, words the page's message must hold)} for the photo input."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photo = (E4E_ASSETS / "images" / "input_img.jpg").read_bytes()
    (folder / "notes.jpg").write_text("not a picture\n" * 20)
    (folder / "cut.jpg").write_bytes(photo[: len(photo) // 2])
    yy, xx = np.mgrid[0:300, 0:300]
    gradient = np.stack([xx * 255 // 299, yy * 255 // 299, np.full_like(xx, 128)], -1).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "no_face.png")
    return {
        "non-image": (folder / "notes.jpg", "not a readable image"),
        "truncated JPEG": (folder / "cut.jpg", "truncated"),
        "60000² PNG": (huge_png(folder / "huge.png"), "decompression bomb"),
        "no face": (folder / "no_face.png", "no face found"),
    }
