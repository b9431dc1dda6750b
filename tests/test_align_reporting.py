"""What `e4e-jax align` says and refuses, as `invert` does: folder entries that cannot be photos are
reported (skipped.txt, one escaped line each, and a printed line), `--output` naming a file and an
`--output-size` that would exhaust memory are one error line, `--resume` of a finished run does nothing
and says so, and the missing-dlib hint fits how e4e-jax was installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from e4e_jax.cli import main as cli_main
from e4e_jax.data import folder
from e4e_jax.inference import alignment
from e4e_jax.storage import manifest
from tests.assets import require

ROOT = Path(__file__).resolve().parents[1]
SIZE = "64"


@pytest.fixture()
def dlib():
    mod = pytest.importorskip("dlib", reason="needs the align extra (dlib-bin)")
    try:
        alignment.default_landmarks_file()
    except alignment.AlignmentUnavailable as e:
        pytest.skip(str(e))
    return mod


@pytest.fixture()
def awkward(tmp_path) -> Path:
    """A photo with a face, and five entries that cannot be photos."""
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(require("images/input_img.jpg"), d / "face.jpg")
    data = (d / "face.jpg").read_bytes()
    with open(os.path.join(os.fsencode(d), b"caf\xe9.jpg"), "wb") as f:  # not UTF-8
        f.write(data)
    (d / "two\nlines.jpg").write_bytes(data)
    (d / "loop.jpg").symlink_to("loop.jpg")
    (d / "gone.jpg").symlink_to("nowhere.jpg")
    (d / "dir.png").mkdir()
    return d


def _align(*argv: str) -> int:
    return cli_main(["align", "--output-size", SIZE, "--workers", "1", *argv])


def test_unusable_entries_are_reported_as_invert_reports_them(dlib, awkward, tmp_path, capsys):
    out = tmp_path / "out"
    assert _align("--images", str(awkward), "--output", str(out)) == 3  # partial: five entries skipped
    err = capsys.readouterr().err
    lines = (out / "skipped.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5  # one line per entry, line breaks and odd bytes escaped
    _, unusable = folder.scan_images(awkward)
    expected = manifest.skipped_text((str(u.path), u.reason) for u in unusable)  # what invert writes
    assert (out / "skipped.txt").read_text(encoding="utf-8") == expected
    by_name = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines}
    assert set(by_name) == {"caf\\xe9.jpg", "two\\nlines.jpg", "loop.jpg", "gone.jpg", "dir.png"}
    assert "not valid UTF-8" in by_name["caf\\xe9.jpg"] and "line break" in by_name["two\\nlines.jpg"]
    assert "loop" in by_name["loop.jpg"] and "broken symbolic link" in by_name["gone.jpg"]
    assert "a folder" in by_name["dir.png"]
    for line in lines:  # each printed as align prints a photo it skips
        path, reason = line.split("\t")
        assert f"skipped {path}: {reason}" in err
    report = json.loads((out / "report.json").read_text())
    assert (report["n_inputs"], report["n_aligned_inputs"], report["n_skipped"]) == (6, 1, 5)
    assert (out / "face.png").is_file()


def test_resume_of_a_finished_run_does_nothing_and_says_so(dlib, awkward, tmp_path, capsys):
    out = tmp_path / "out"
    assert _align("--images", str(awkward), "--output", str(out)) == 3
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert _align("--images", str(awkward), "--output", str(out), "--resume") == 3  # the run's own status
    err = capsys.readouterr().err
    assert f"nothing to resume: {out} holds the finished run; aligned 1 face(s) from 1 of 6 photos" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten
    # A photo added since: not finished for this listing, so --resume does that photo.
    shutil.copy(awkward / "face.jpg", awkward / "later.jpg")
    assert _align("--images", str(awkward), "--output", str(out), "--resume") == 3
    assert (out / "later.png").is_file() and "nothing to resume" not in capsys.readouterr().err


def test_output_that_is_a_file_is_one_error_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32)).save(photos / "a.png")
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    assert _align("--images", str(photos), "--output", str(target)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --output {target} is a file; choose a folder"]
    assert target.read_text() == "mine"


@pytest.mark.parametrize("argv", [["align", "--output-size", "100000"], ["invert", "--align-size", "100000"]])
def test_crop_size_is_bounded(argv, tmp_path):
    """100000 px grew a worker to 23 GB: refused at parse time, one line, nothing made."""
    rest = ["--images", str(tmp_path), "--output", str(tmp_path / "out")] + (
        ["--model", str(tmp_path)] if argv[0] == "invert" else []
    )
    r = subprocess.run(
        [sys.executable, "-m", "e4e_jax.cli", *argv, *rest],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("e4e-jax") and "error:" in x]
    assert f"must be in [1, {alignment.MAX_OUTPUT_SIZE}], got 100000" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="output_size"):
        alignment.Aligner(alignment.MAX_OUTPUT_SIZE + 1)


_HINT = (
    "import sys; sys.modules['dlib'] = None\n"  # as if dlib were not installed
    "from e4e_jax.inference import alignment\n"
    "try:\n    alignment.Aligner().check()\n"
    "except alignment.AlignmentUnavailable as e:\n    print(e)\n"
)


def test_missing_dlib_hint_fits_a_clone_and_an_installed_package(tmp_path):
    def message(pythonpath: Path) -> str:
        r = subprocess.run(
            [sys.executable, "-c", _HINT],
            env=dict(os.environ, PYTHONPATH=str(pythonpath)),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    clone = message(ROOT)
    assert f"pip install -e '.[align]' (in {ROOT})" in clone and "dlib" in clone
    site = tmp_path / "site-packages"  # the package alone, as pip installs it: no setup.py beside it
    shutil.copytree(ROOT / "e4e_jax", site / "e4e_jax", ignore=shutil.ignore_patterns("__pycache__"))
    installed = message(site)
    assert "pip install 'e4e-jax[align]'" in installed and "-e" not in installed
