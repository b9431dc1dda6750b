"""Files several test modules use, made once per test session in the `shared_dir` folder
(tests/conftest.py): building a bundle costs tens of seconds on a loaded 2-core machine, so the small e4e
bundle, the sample folder of `invert` and its uninterrupted run are made by whichever module asks
first, and the next ones take them as they are. Each is made under a temporary name and renamed into
place, so a failure half-way leaves nothing a later module would take for whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

N_GOOD = 11  # good photos in `invert_photos`, plus one bad file that sorts between them


def _once(path: Path, make: Callable[[Path], None]) -> Path:
    if not path.exists():
        tmp = path.with_name(path.name + ".making")
        shutil.rmtree(tmp, ignore_errors=True)
        make(tmp)
        tmp.rename(path)
    return path


def small_e4e_bundle(shared: Path) -> Path:
    """A random-weight e4e bundle with the small encoder and a 16 px generator (tests/test_invert_cli.py)."""
    from tests.test_invert_cli import SMALL_ENCODER, make_e4e_bundle

    return _once(shared / "small-e4e", lambda p: make_e4e_bundle(p, encoder_sizes=SMALL_ENCODER))


def invert_photos(shared: Path) -> Path:
    """N_GOOD random 300x280 JPEGs im00..im10 and `im05_bad.jpg`, which is not an image."""

    def make(root: Path) -> None:
        root.mkdir()
        rng = np.random.default_rng(0)
        for i in range(N_GOOD):
            Image.fromarray(rng.integers(0, 255, (300, 280, 3), np.uint8)).save(root / f"im{i:02d}.jpg")
        (root / "im05_bad.jpg").write_bytes(b"not a jpeg")

    return _once(shared / "invert-photos", make)


def made_once(shared: Path, name: str, make: Callable[[Path], None]) -> Path:
    """`shared/name`, made by `make(path)` the first time it is asked for."""
    return _once(shared / name, make)
