"""What `e4e-jax invert` says about its inputs, as `align` says it: a line per file it skips (with the
reason, escaped as in skipped.txt), skipped.txt one line per entry whatever the name holds, and faces
and photos counted apart with `--align --faces all`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4e_jax import alignment, manifest
from e4e_jax.cli import main as cli_main
from tests import shared_files
from tests.assets import require


@pytest.fixture(scope="module")
def small_bundle(shared_dir) -> Path:
    return shared_files.small_e4e_bundle(shared_dir)


def _invert(bundle: Path, images: Path, out: Path, *extra: str) -> int:
    argv = ["invert", "--model", str(bundle), "--images", str(images), "--output", str(out), "--batch-size", "2"]
    return cli_main([*argv, "--no-images", *extra])


def test_each_skipped_file_is_said_and_listed_on_one_line(small_bundle, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(imgs / name)
    (imgs / "bad.jpg").write_bytes(b"not a jpeg")  # skipped by a decoder
    (imgs / "two\nlines.jpg").write_bytes((imgs / "a.jpg").read_bytes())  # skipped by the listing
    (imgs / "tab\there.png").mkdir()  # a folder named like an image, with a tab in its name
    out = tmp_path / "out"
    assert _invert(small_bundle, imgs, out) == 3
    err = capsys.readouterr().err
    text = (out / manifest.SKIPPED).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 3 and all(line.count("\t") == 1 for line in lines), lines  # one entry a line
    names = [Path(line.split("\t")[0]).name for line in lines]
    assert names == ["bad.jpg", "tab\\there.png", "two\\nlines.jpg"]
    for line in lines:  # each said as it is found, as align says it
        path, reason = line.split("\t")
        assert f"skipped {path}: {reason}" in err, err
    report = json.loads((out / manifest.REPORT).read_text())
    assert sorted(Path(s["file"]).name for s in report["skipped"]) == ["bad.jpg", "tab\there.png", "two\nlines.jpg"]
    assert f"inverted 2 of 5 images into {out}" in err


def test_align_all_faces_counts_faces_and_photos(small_bundle, tmp_path, capsys):
    pytest.importorskip("dlib", reason="needs the align extra (dlib-bin)")
    try:
        alignment.default_landmarks_file()
    except alignment.AlignmentUnavailable as e:
        pytest.skip(str(e))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    with Image.open(require("images/input_img.jpg")) as src:
        src = src.convert("RGB")
        pair = Image.new("RGB", (1800, 1000), (90, 110, 130))
        pair.paste(src.resize((700, 700), Image.LANCZOS), (50, 150))
        pair.paste(src.resize((350, 350), Image.LANCZOS).transpose(Image.FLIP_LEFT_RIGHT), (1300, 300))
        pair.save(imgs / "pair.png")
    Image.new("RGB", (300, 300), (200, 200, 200)).save(imgs / "wall.png")  # no face
    out = tmp_path / "out"
    assert _invert(small_bundle, imgs, out, "--align", "--faces", "all", "--align-size", "256") == 3
    err = capsys.readouterr().err
    assert f"inverted 2 face(s) from 1 of 2 photos into {out}" in err, err
    assert f"skipped {imgs / 'wall.png'}: no face found" in err
    report = json.loads((out / manifest.REPORT).read_text())
    assert (report["n_inverted"], report["n_inverted_files"], report["n_files"]) == (2, 1, 2)
    assert (out / manifest.FACES).read_text() == "0\n1\n"
