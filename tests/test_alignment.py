"""Face alignment (e4e_jax.inference.alignment, `e4e-jax align`) on real photos, against a straightforward
reference of the official recipe (tests/ffhq_reference.py).

Angles and positions are measured on landmarks re-detected on the aligned output (the stronger
test: it checks the pixels, not only our own geometry). Needs dlib + face-recognition-models (the
`align` extra) and the official sample photos in ../shared/assets/e4e/images.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4e_jax.inference import alignment as al
from e4e_jax.inference import ffhq_crop as crop
from tests import ffhq_reference as ref
from tests.assets import require

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256  # most tests align at 256 to stay fast
BACKGROUND = (90, 110, 130)


def _photo(name: str) -> Path:
    return require(f"images/{name}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def dlib():
    mod = pytest.importorskip("dlib", reason="needs the align extra (dlib-bin)")
    try:
        al.default_landmarks_file()
    except al.AlignmentUnavailable as e:
        pytest.skip(str(e))
    return mod


@pytest.fixture(scope="module")
def aligner(dlib):
    return al.Aligner(SIZE).load()


@pytest.fixture(scope="module")
def aligner_1024(aligner):
    a = al.Aligner(1024)
    a._detector, a._predictor = aligner._detector, aligner._predictor  # same models, no second load
    return a


def _eyes_on(aligner: al.Aligner, image: np.ndarray) -> np.ndarray:
    """Eye centres (2, 2) re-detected on an aligned image."""
    boxes = aligner.detect(image)
    assert boxes, "no face found again on the aligned output"
    return np.stack(crop.eye_and_mouth_points(aligner.landmarks_in(image, boxes[0]))[:2])


def _angle(eyes: np.ndarray) -> float:
    d = eyes[1] - eyes[0]
    return float(np.degrees(np.arctan2(d[1], d[0])))


def _reference_eyes(lm: np.ndarray, size: int) -> np.ndarray:
    """Where the reference recipe puts the eye centres of landmarks `lm` in a `size` output: the
    inverse of its quad map (output pixel index = size * quad coordinate - 0.5)."""
    quad, _ = ref.recipe_quad(lm)
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    origin, ex, ey = quad[0], quad[3] - quad[0], quad[1] - quad[0]
    d = eyes - origin
    return np.stack([d @ ex / (ex @ ex), d @ ey / (ey @ ey)], -1) * size - 0.5


def _rotated_copy(src: Image.Image) -> Image.Image:
    """input_img rotated 20°, shrunk to 600 px and pasted off-centre on a 1600x1200 canvas."""
    rot = src.rotate(20, resample=Image.BICUBIC, expand=True, fillcolor=BACKGROUND).resize((600, 600), Image.LANCZOS)
    canvas = Image.new("RGB", (1600, 1200), BACKGROUND)
    canvas.paste(rot, (150, 500))
    return canvas


def _two_faces(src: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (1800, 1000), BACKGROUND)
    canvas.paste(src.resize((700, 700), Image.LANCZOS), (50, 150))
    canvas.paste(src.resize((350, 350), Image.LANCZOS).transpose(Image.FLIP_LEFT_RIGHT), (1300, 300))
    return canvas


# ----------------------------------------------------------------------------- no dlib needed
def test_padding_blur_matches_recipe():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    for h, w, qsize in [(300, 260, 200.0), (400, 380, 1019.0), (240, 420, 1500.0)]:
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx // 40 + yy // 40) % 2) * 200], -1)
        img = np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
        p = int(np.rint(qsize * crop.PAD_FRACTION))
        pad = (p, p + 7, p + 3, max(p - 5, 1))
        ours = crop.blurred_reflect_pad(img, pad, qsize * crop.BLUR_FRACTION).astype(int)
        want = ref.recipe_pad(img, pad, qsize).astype(int)
        assert ours.shape == want.shape
        diff = np.abs(ours - want)
        assert diff.max() <= 2 and diff.mean() < 0.35, (h, w, qsize, diff.max(), diff.mean())


def test_quad_geometry():
    lm = np.zeros((68, 2))
    lm[36:42] = (100, 200)
    lm[42:48] = (200, 200)
    lm[48], lm[54] = (110, 300), (190, 300)
    quad, qsize = crop.ffhq_quad(lm)
    q_ref, qsize_ref = ref.recipe_quad(lm)
    np.testing.assert_allclose(quad, q_ref)
    assert qsize == pytest.approx(qsize_ref) == pytest.approx(400.0)  # 2 x (2 x eye distance 100)
    eyes = crop.to_output_coords(np.array([[100, 200], [200, 200]]), quad, 1024)
    np.testing.assert_allclose(eyes[:, 1], eyes[0, 1])  # level
    np.testing.assert_allclose(eyes.mean(0)[0], 511.5)  # centred
    assert crop.transform_size(qsize, 1024) == 1024 and crop.transform_size(3000, 1024) == 3000
    assert crop.transform_size(9000, 1024) == 4096


# ----------------------------------------------------------------------------- real photos
def test_input_img_level_and_where_the_recipe_puts_the_eyes(aligner_1024, dlib):
    path = _photo("input_img.jpg")
    faces = aligner_1024.align(path)
    assert len(faces) == 1 and faces[0].image.shape == (1024, 1024, 3) and faces[0].image.dtype == np.uint8
    eyes = _eyes_on(aligner_1024, faces[0].image)
    assert abs(_angle(eyes)) < 0.5
    # The reference: the official procedure's landmarks (full-resolution detection, models loaded
    # afresh) and the recipe's quad.
    lm = ref.official_landmarks(path, str(al.default_landmarks_file()))
    want = _reference_eyes(lm, 1024)
    assert np.abs(eyes - want).max() < 2.0, (eyes, want)


def test_crop_matches_reference_pixels(aligner, dlib):
    """Same landmarks: our crop against the recipe's (FFHQ's 4x sampling, full-resolution float blur),
    without (256) and with (128) the shrink step."""
    path = _photo("input_img.jpg")
    lm = ref.official_landmarks(path, str(al.default_landmarks_file()))
    src = Image.open(path).convert("RGB")
    quad, qsize = crop.ffhq_quad(lm)
    for size, min_psnr in [(SIZE, 45.0), (128, 35.0)]:
        ours = crop.align_crop(src, quad, qsize, size)
        want = np.asarray(ref.recipe_crop(src, lm, size))
        assert _psnr(ours, want) > min_psnr, size


def test_rotated_shrunk_off_centre_comes_back_upright(aligner, dlib):
    src = Image.open(_photo("input_img.jpg")).convert("RGB")
    straight = _eyes_on(aligner, aligner.align(src)[0].image)
    faces = aligner.align(_rotated_copy(src))
    assert len(faces) == 1
    eyes = _eyes_on(aligner, faces[0].image)
    assert abs(_angle(eyes)) < 1.0
    # centred and scaled as the upright original: same eye midpoint and distance
    assert np.abs(eyes.mean(0) - straight.mean(0)).max() < 2.0
    assert np.linalg.norm(eyes[1] - eyes[0]) == pytest.approx(np.linalg.norm(straight[1] - straight[0]), rel=0.03)


def test_input_larger_than_2048(aligner, dlib):
    """The official code crashes here (Image.ANTIALIAS in the shrink step, gone since Pillow 10)."""
    src = Image.open(_photo("input_img.jpg")).convert("RGB")
    straight = _eyes_on(aligner, aligner.align(src)[0].image)
    big = src.resize((2600, 2600), Image.BICUBIC)
    face = aligner.align(big)[0]
    assert face.source_size == (2600, 2600) and face.image.shape == (SIZE, SIZE, 3)
    assert np.abs(_eyes_on(aligner, face.image) - straight).max() < 2.0


@pytest.mark.parametrize("name", ["church_img.jpg", "car_img.jpg"])
def test_no_face(aligner, dlib, name):
    with pytest.raises(al.NoFaceFound, match="no face found"):
        aligner.align(_photo(name))
    skipped = aligner.align_or_skip(_photo(name))
    assert skipped.reason == "no face found"


def test_two_faces_largest_first(aligner, dlib):
    photo = _two_faces(Image.open(_photo("input_img.jpg")).convert("RGB"))
    faces = aligner.align(photo)
    assert [f.face_index for f in faces] == [0, 1]
    area = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert area[0] > 3 * area[1] and faces[0].box[0] < 900 < faces[1].box[0]
    only = aligner.align(photo, max_faces=1)
    assert len(only) == 1 and np.array_equal(only[0].image, faces[0].image)


def test_unreadable(aligner, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(al.UnreadableImage, match="not a readable image"):
        aligner.align(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    assert aligner.align_or_skip(tmp_path / "empty.png").reason == "empty file (0 bytes)"


def test_aligner_pickles_as_settings_and_loads_in_the_worker(aligner, dlib):
    blob = pickle.dumps(aligner)
    assert len(blob) < 1000  # settings only, not the 100 MB model
    again = pickle.loads(blob)
    assert again.settings == aligner.settings and again._predictor is None
    photo = _photo("input_img.jpg")
    np.testing.assert_array_equal(again.align(photo)[0].image, aligner.align(photo)[0].image)


def test_wrong_landmark_model_is_refused(dlib):
    five = al.default_landmarks_file().with_name("shape_predictor_5_face_landmarks.dat")
    if not five.is_file():
        pytest.skip(f"{five} not installed (face-recognition-models >= 0.3)")
    with pytest.raises(al.AlignmentUnavailable, match="predicts 5 landmarks"):
        al.Aligner(SIZE, landmarks=five).load()


# ----------------------------------------------------------------------------- the command
def _cli(*argv: str) -> int:
    from e4e_jax import cli

    return cli.main(["align", *argv])


@pytest.fixture()
def photos(tmp_path, dlib):
    """input_img, church_img, a two-face composite and a corrupt file."""
    d = tmp_path / "photos"
    d.mkdir()
    src = _photo("input_img.jpg")
    (d / "a_person.jpg").write_bytes(src.read_bytes())
    (d / "church.jpg").write_bytes(_photo("church_img.jpg").read_bytes())
    _two_faces(Image.open(src).convert("RGB")).save(d / "pair.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d


def test_cli_skips_resumes_and_refuses(photos, tmp_path):
    out = tmp_path / "aligned"
    args = ["--images", str(photos), "--output", str(out), "--output-size", str(SIZE), "--workers", "1"]
    assert _cli(*args) == 3  # partial: church (no face) and broken.jpg skipped
    assert sorted(p.name for p in out.glob("*.png")) == ["a_person.png", "pair.png"]
    skipped = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert skipped[str(photos / "church.jpg")] == "no face found"
    assert "cannot decode" in skipped[str(photos / "broken.jpg")]
    report = json.loads((out / "report.json").read_text())
    assert (report["n_inputs"], report["n_aligned_inputs"], report["n_skipped"]) == (4, 2, 2)
    doc = json.loads((out / "landmarks" / "a_person.json").read_text())
    assert np.array(doc["faces"][0]["landmarks"]).shape == (68, 2) and doc["image_size"] == [1024, 1024]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert Image.open(out / "a_person.png").size == (SIZE, SIZE)

    assert _cli(*args) == 2  # not empty: refused without --resume/--overwrite
    # An interrupted run: one photo's PNG never written. --resume redoes that one only.
    (out / "pair.png").unlink()
    kept = (out / "landmarks" / "a_person.json").stat().st_mtime_ns
    assert _cli(*args, "--resume") == 3
    assert (out / "pair.png").is_file()
    assert (out / "landmarks" / "a_person.json").stat().st_mtime_ns == kept
    report = json.loads((out / "report.json").read_text())
    assert report["n_resumed"] == 2 and report["n_aligned_inputs"] == 2  # a_person + church were done
    assert _cli(*args[:-4], "--output-size", "128", "--workers", "1", "--resume") == 2  # other settings


def test_cli_all_faces_in_worker_processes(photos, tmp_path):
    """--faces all through the process pool (a real `e4e-jax` subprocess)."""
    out = tmp_path / "all"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "e4e_jax.cli",
            "align",
            "--images",
            str(photos),
            "--output",
            str(out),
            "--faces",
            "all",
            "--output-size",
            str(SIZE),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 3, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["a_person_face0.png", "pair_face0.png", "pair_face1.png"]
    doc = json.loads((out / "landmarks" / "pair.json").read_text())
    boxes = [f["box"] for f in doc["faces"]]
    assert (boxes[0][2] - boxes[0][0]) > 1.5 * (boxes[1][2] - boxes[1][0])  # face0 is the larger


def test_cli_refuses_output_inside_input(photos):
    assert _cli("--images", str(photos), "--output", str(photos / "out")) == 2
    assert not (photos / "out").exists()


def test_output_stems_do_not_collide():
    from e4e_jax.jobs.align import output_stems

    stems = output_stems([Path("x/a.jpg"), Path("x/a.png"), Path("x/b.jpg")])
    assert stems == {Path("x/a.jpg"): "a_jpg", Path("x/a.png"): "a_png", Path("x/b.jpg"): "b"}


def test_nothing_else_imports_dlib():
    code = (
        "import sys, e4e_jax.cli as c, e4e_jax.inference.alignment, e4e_jax.data.folder; c.build_parser(); "
        "assert 'dlib' not in sys.modules and 'scipy' not in sys.modules"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


def test_process_pool_api_for_invert_align(aligner, dlib):
    """The API `invert --align` uses: worker_init as the pool initializer, worker_align as the task."""
    import concurrent.futures as cf
    import multiprocessing

    photo, church = _photo("input_img.jpg"), _photo("church_img.jpg")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + env_path  # the worker imports this checkout
    try:
        with cf.ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=al.worker_init,
            initargs=(aligner.settings,),
        ) as pool:
            faces, skipped = (
                pool.submit(al.worker_align, photo, 1).result(),
                pool.submit(al.worker_align, church).result(),
            )
    finally:
        os.environ["PYTHONPATH"] = env_path
    assert np.array_equal(faces[0].image, aligner.align(photo)[0].image)
    assert skipped.path == church and skipped.reason == "no face found"
