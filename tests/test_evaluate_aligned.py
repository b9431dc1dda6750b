"""`evaluate` and `edit` on what `invert` wrote: each code is compared with (and shown beside) the image it
came from — the aligned face crop of an `invert --align` output, every face of a photo its own row — and
`metrics.json` keys its per-image figures by the relative path (and face), so that no two rows share an
entry (issue 24, items 1-3; issue 30, item 5: a files.txt listing one file twice)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4e_jax.cli import main as cli_main
from e4e_jax.data import folder
from e4e_jax.errors import install_hint
from e4e_jax.inference import alignment
from e4e_jax.storage import manifest
from tests import tiny_bundles
from tests.assets import E4E_ASSETS, needs_assets
from tests.tiny_bundles import ENC_HW

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def e4e(tmp_path_factory):
    return tiny_bundles.save_e4e(tmp_path_factory.mktemp("e4e") / "e4e")


def _evaluate(e4e: Path, out: Path, *args: str) -> dict:
    argv = ["evaluate", "--model", str(e4e), "--output", str(out), "--num-samples", "0", "--batch-size", "2", *args]
    assert cli_main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def _two_faces(path: Path) -> Path:
    """The official sample face twice: 320 px, and mirrored at 200 px (the smaller one is face 1)."""
    face = Image.open(E4E_ASSETS / "images" / "input_img.jpg").convert("RGB")
    canvas = Image.new("RGB", (560, 330), (128, 128, 128))
    canvas.paste(face.resize((320, 320), Image.LANCZOS), (5, 5))
    canvas.paste(face.resize((200, 200), Image.LANCZOS).transpose(Image.FLIP_LEFT_RIGHT), (345, 60))
    canvas.save(path)
    return path


@needs_assets
def test_every_face_is_scored_and_shown_against_its_own_aligned_crop(e4e, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = _two_faces(photos / "two.png")
    inv = tmp_path / "inv"
    argv = ["invert", "--model", str(e4e), "--images", str(photos), "--output", str(inv), "--align"]
    assert cli_main([*argv, "--faces", "all", "--image-format", "png", "--batch-size", "2"]) == 0
    assert manifest.read_lines(inv / manifest.FACES) == ["0", "1"]

    faces = alignment.Aligner().align(photo)  # invert's default settings (its report does not record them)
    crops = [alignment.resize_for_encoder(f.image, ENC_HW) for f in faces]
    assert len(crops) == 2
    # What the decoder fed the encoder is exactly these pixels (the re-alignment is deterministic).
    from e4e_jax.jobs.invert import align_step

    fed = align_step.prepare(str(photo), ENC_HW, alignment.DEFAULT_OUTPUT_SIZE, "all", None)
    assert [k for k, _ in fed] == [0, 1] and all(np.array_equal(px, c) for (_, px), c in zip(fed, crops))

    rep = _evaluate(e4e, tmp_path / "m", "--inversions", str(inv))
    assert "does not record the alignment settings" in capsys.readouterr().err
    per = rep["distortion"]["per_image"]
    assert rep["n_images"] == 2 and sorted(per) == ["two.png#face0", "two.png#face1"]
    recon = [inv / line for line in manifest.read_lines(inv / manifest.INVERSIONS)]
    for k in range(2):
        expected = _l2(folder.normalize(crops[k]), folder.load_image(recon[k], ENC_HW))
        assert per[f"two.png#face{k}"]["l2"] == pytest.approx(expected, rel=1e-5)
        # ... and not against the whole photo, which the evaluation took before.
        assert abs(expected - _l2(folder.load_image(photo, ENC_HW), folder.load_image(recon[k], ENC_HW))) > 1e-3
    assert rep["distortion"]["l2_std"] > 0
    assert rep["distortion"]["measured_on"] == {"saved": 2, "rendered": 0}

    # edit: the source column is each code's crop, the images are named after photo and face.
    out = tmp_path / "edits"
    assert (
        cli_main(
            [
                "edit",
                "--model",
                str(e4e),
                "--latents",
                str(inv),
                "--output",
                str(out),
                "--sefa",
                "0",
                "--strengths",
                "1",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000_two_face0_s+1.png", "00001_two_face1_s+1.png"]
    grid = np.asarray(Image.open(out / "grid.png").convert("RGB"))
    cell = 128
    top = grid.shape[0] - (2 * (cell + 2) + 2)  # below the header band
    for k in range(2):
        small = alignment.resize_for_encoder(faces[k].image, (16, 16))  # the generator's size, zoomed
        expected = np.asarray(Image.fromarray(small).resize((cell, cell), Image.BILINEAR))
        y = top + 2 + k * (cell + 2)
        assert np.array_equal(grid[y : y + cell, 2 : 2 + cell], expected), k


@needs_assets
def test_recorded_alignment_settings_are_used(e4e, tmp_path, capsys):
    """report.json's "align" record (alignment.settings_record, what an aligned invert run writes) gives
    the crops of a run with other settings exactly."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = _two_faces(photos / "two.png")
    inv = tmp_path / "inv"
    argv = ["invert", "--model", str(e4e), "--images", str(photos), "--output", str(inv), "--align"]
    assert cli_main([*argv, "--align-size", "300", "--image-format", "png"]) == 0
    report = json.loads((inv / manifest.REPORT).read_text())
    if manifest.ALIGN_RECORD not in report:  # invert of this version does not write it yet
        report[manifest.ALIGN_RECORD] = alignment.settings_record(alignment.Aligner(300).settings)
        (inv / manifest.REPORT).write_text(json.dumps(report))
    rep = _evaluate(e4e, tmp_path / "m", "--inversions", str(inv))
    assert "does not record" not in capsys.readouterr().err
    crop = alignment.resize_for_encoder(alignment.Aligner(300).align(photo, 1)[0].image, ENC_HW)
    recon = inv / manifest.read_lines(inv / manifest.INVERSIONS)[0]
    expected = _l2(folder.normalize(crop), folder.load_image(recon, ENC_HW))
    assert rep["distortion"]["per_image"]["two.png#face0"]["l2"] == pytest.approx(expected, rel=1e-5)


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*ENC_HW, 3), np.uint8)).save(path)
    return path


def test_a_file_listed_twice_is_paired_row_by_row(e4e, tmp_path):
    """files.txt: a.png, a.png, b.png with three different codes and reconstructions: each row is scored
    with its own reconstruction (before, both a.png rows took the second's)."""
    photos, inv = tmp_path / "photos", tmp_path / "inv"
    files = [_image(photos / "a.png", 1), _image(photos / "b.png", 2)]
    listed = [files[0], files[0], files[1]]
    recon = [_image(inv / "inversions" / f"{i:05d}_{p.stem}.png", 10 + i) for i, p in enumerate(listed)]
    np.save(inv / "latents.npy", tiny_bundles.latents(3))
    (inv / "files.txt").write_text("".join(f"{p}\n" for p in listed))
    (inv / "inversions.txt").write_text("".join(f"inversions/{p.name}\n" for p in recon))
    per = _evaluate(e4e, tmp_path / "m", "--inversions", str(inv))["distortion"]["per_image"]
    assert list(per) == ["a.png", "a.png#row1", "b.png"]
    for key, src, rec in zip(per, listed, recon):
        assert per[key]["l2"] == pytest.approx(
            _l2(folder.load_image(src, ENC_HW), folder.load_image(rec, ENC_HW)), rel=1e-5
        )


def test_per_image_keys_are_relative_paths(e4e, tmp_path):
    """--recursive over a/x.png and b/x.png: two entries, keyed by their paths under --images; the
    distortion says what it was measured on."""
    photos = tmp_path / "photos"
    _image(photos / "a" / "x.png", 1)
    _image(photos / "b" / "x.png", 2)
    rep = _evaluate(e4e, tmp_path / "m", "--images", str(photos), "--recursive")
    assert rep["n_images"] == 2 and sorted(rep["distortion"]["per_image"]) == ["a/x.png", "b/x.png"]
    assert rep["distortion"]["measured_on"] == {"saved": 0, "rendered": 2}
    assert "unclipped" in rep["notes"]["distortion"]


NO_DLIB = """
import sys
sys.modules["dlib"] = None  # as where the align extra is not installed: `import dlib` raises ImportError
from e4e_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_align_extra_evaluate_says_so_and_edit_leaves_the_source_blank(e4e, tmp_path):
    """An aligned output (faces.txt) where dlib is missing: evaluate cannot make the sources (one error
    line naming the extra, before any work); edit still writes its edits, the grid's source column blank."""
    photos, inv = tmp_path / "photos", tmp_path / "inv"
    photo = _image(photos / "p.png", 1)
    _image(inv / "inversions" / "00000_p_face0.png", 2)
    np.save(inv / "latents.npy", tiny_bundles.latents(1))
    (inv / "files.txt").write_text(f"{photo}\n")
    (inv / "faces.txt").write_text("0\n")
    (inv / "inversions.txt").write_text("inversions/00000_p_face0.png\n")
    root = Path(__file__).resolve().parents[1]

    def run(*argv):
        return subprocess.run(
            [sys.executable, "-c", NO_DLIB, *argv], capture_output=True, text=True, cwd=root, timeout=600
        )

    out = run("evaluate", "--model", str(e4e), "--inversions", str(inv), "--output", str(tmp_path / "m"))
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "face crops, made again" in errors[0] and install_hint("align") in errors[0], errors[0]
    assert "preparing the evaluation" not in out.stderr and not (tmp_path / "m").exists()
    edit = ["edit", "--model", str(e4e), "--latents", str(inv), "--output", str(tmp_path / "e"), "--sefa", "0"]
    out = run(*edit, "--strengths", "1")
    assert out.returncode == 0, out.stderr
    assert "note: the grid's source column is left blank" in out.stderr
    grid = np.asarray(Image.open(tmp_path / "e" / "grid.png").convert("RGB"))
    top = grid.shape[0] - (128 + 4)
    assert (grid[top + 2 : top + 130, 2:130] == 255).all()  # the blank source cell
