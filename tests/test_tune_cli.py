"""`e4e-jax tune` on the real sample photos inverted by a small e4e bundle (quickstart-size generator), and
rendering its tuned generators with `synthesize --tuned` and `edit --tuned`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from e4e_jax import bundle, editing, pti_bundle
from e4e_jax.cli import main as cli_main
from e4e_jax.images import to_uint8
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from e4e_jax.training.networks import random_loss_network
from tests.assets import require
from tests.test_invert_cli import SMALL_ENCODER, make_e4e_bundle

SIZE = 32  # the quickstart's generator size (the smallest AlexNet's LPIPS takes)
STEPS = 6


def make_inputs(root: Path) -> dict[str, Path]:
    """A small e4e bundle, a random-weight LPIPS bundle, the sample photos and their invert output."""
    paths = {k: root / k for k in ("e4e", "lpips", "photos", "inv")}
    make_e4e_bundle(paths["e4e"], size=SIZE, encoder_sizes=SMALL_ENCODER)
    bundle.save(paths["lpips"], "lpips", {"net": "alex", "version": "0.1"}, random_loss_network("lpips", 1))
    paths["photos"].mkdir()
    for p in sorted(require("images").glob("*.jpg")):
        shutil.copy(p, paths["photos"] / p.name)
    argv = ["invert", "--model", str(paths["e4e"]), "--images", str(paths["photos"]), "--output", str(paths["inv"])]
    assert cli_main([*argv, "--batch-size", "2", "--quiet"]) == 0
    return paths


def tune_argv(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "tune",
        "--model",
        str(inputs["e4e"]),
        "--lpips",
        str(inputs["lpips"]),
        "--inversions",
        str(inputs["inv"]),
        "--output",
        str(out),
        "--steps",
        str(STEPS),
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    inputs = make_inputs(root)
    out = root / "tuned"
    assert cli_main(tune_argv(inputs, out, "--batch-size", "3", "--image-format", "png")) == 0
    return inputs, out


def test_tune_writes_inverts_layout_and_lowers_each_photos_lpips(tuned):
    inputs, out = tuned
    inv = inputs["inv"]
    files = (out / "files.txt").read_text().splitlines()
    assert files == (inv / "files.txt").read_text().splitlines() and len(files) == 4
    np.testing.assert_array_equal(np.load(out / "latents.npy"), np.load(inv / "latents.npy"))
    names = (out / "inversions.txt").read_text().splitlines()
    assert names == [f"inversions/{i:05d}_{Path(f).stem}.png" for i, f in enumerate(files)]
    gens = (out / "generators.txt").read_text().splitlines()
    assert gens == [f"generators/{i:05d}_{Path(f).stem}" for i, f in enumerate(files)]
    for name in names:
        assert np.asarray(Image.open(out / name)).shape == (SIZE, SIZE, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pti"]["max_steps"] == STEPS and metrics["pti"]["locality"] is False
    assert [p["file"] for p in metrics["photos"]] == files
    assert [p["key"] for p in metrics["photos"]] == [Path(f).name for f in files]
    for p in metrics["photos"]:
        assert p["steps"] == STEPS
        assert p["lpips_after"] < p["lpips_before"] and p["l2_after"] < p["l2_before"], p
    assert not (out / ".e4e-tune").exists() and not list(out.rglob(".*tmp-*"))
    assert json.loads((out / "report.json").read_text())["n_tuned_now"] == 4


def test_each_photo_has_a_small_delta_generator_of_the_base(tuned):
    inputs, out = tuned
    base = bundle.load(inputs["e4e"], "e4e")[1]["generator"]["params"]["synthesis"]
    fp = pti_bundle.synthesis_fingerprint(base)
    files, paths = pti_bundle.tuned_generators(out)
    deltas = [pti_bundle.load(p, fp)[1] for p in paths]
    for d in deltas:
        assert all(leaf.dtype.name == "bfloat16" for leaf in jax.tree.leaves(d))
        assert max(float(np.abs(np.asarray(leaf, np.float32)).max()) for leaf in jax.tree.leaves(d)) > 0
    # Different photos, different generators.
    a, b = (np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(d)]) for d in deltas[:2])
    assert not np.array_equal(a, b)


def test_synthesize_tuned_renders_the_saved_reconstructions(tuned, tmp_path):
    inputs, out = tuned
    lat = str(out / "latents.npy")
    base_argv = ["synthesize", "--model", str(inputs["e4e"]), "--latents", lat]
    assert cli_main([*base_argv, "--output", str(tmp_path / "t.npy"), "--tuned", str(out)]) == 0
    assert cli_main([*base_argv, "--output", str(tmp_path / "b.npy")]) == 0
    tuned_imgs, base_imgs = np.load(tmp_path / "t.npy"), np.load(tmp_path / "b.npy")
    saved = np.stack([np.asarray(Image.open(out / n)) for n in (out / "inversions.txt").read_text().split()])
    # The same generators (base + the saved deltas) rendered the PNGs: equal up to a rounding step.
    assert np.abs(to_uint8(tuned_imgs).astype(int) - saved).max() <= 1
    assert np.abs(tuned_imgs - base_imgs).mean() > 0.02  # tuning changed what the generator draws


def _edited(out: Path, i: int, strength: str) -> np.ndarray:
    """Edited image i at `strength` (edit names it NNNNN_{source stem}_s{strength}.png)."""
    (path,) = (out / "images").glob(f"{i:05d}_*s{strength}.png")
    return np.asarray(Image.open(path)).astype(int)


def test_edit_of_tuned_photos_moves_the_latents_unchanged_and_changes_the_image(tuned, tmp_path):
    inputs, out = tuned
    direction = require("interfacegan_directions") / "age.pt"
    edit = ["edit", "--model", str(inputs["e4e"]), "--latents", str(out), "--tuned", str(out)]
    rc = cli_main([*edit, "--output", str(tmp_path / "ifg"), "--interfacegan", str(direction), "--strengths", "0", "3"])
    assert rc == 0
    latents = np.load(out / "latents.npy")
    edits = np.load(tmp_path / "ifg" / "latents.npy")
    v = editing.load_interfacegan_direction(direction)
    np.testing.assert_allclose(edits[1] - latents, np.broadcast_to(3 * v, latents.shape), atol=1e-5)
    saved = [np.asarray(Image.open(out / n)) for n in (out / "inversions.txt").read_text().split()]
    for i, recon in enumerate(saved):
        at0, at3 = (_edited(tmp_path / "ifg", i, s) for s in ("+0", "+3"))
        assert np.abs(at0 - recon).max() <= 1  # strength 0: the tuned reconstruction
        assert np.abs(at3 - at0).mean() > 2  # the edit shows in the tuned generator's image
    rc = cli_main([*edit, "--output", str(tmp_path / "sefa"), "--sefa", "0", "--layers", "0-1", "--strengths", "4"])
    assert rc == 0
    for i, recon in enumerate(saved):
        moved = _edited(tmp_path / "sefa", i, "+4")
        assert np.abs(moved - recon).mean() > 2


def test_tuned_generators_of_another_base_or_count_are_refused(tuned, tmp_path, capsys):
    inputs, out = tuned
    cfg = StyleGAN2Config(size=SIZE, channels=(16,) * 4, n_mlp=2)
    bundle.save(tmp_path / "other", "stylegan2", cfg.to_dict(), init_variables(cfg, jax.random.key(7)))
    argv = [
        "synthesize",
        "--latents",
        str(out / "latents.npy"),
        "--tuned",
        str(out),
        "--output",
        str(tmp_path / "o.npy"),
    ]
    assert cli_main([*argv, "--model", str(tmp_path / "other")]) == 2
    assert "tuned from another generator" in capsys.readouterr().err
    np.save(tmp_path / "two.npy", np.load(out / "latents.npy")[:2])
    argv[2] = str(tmp_path / "two.npy")
    assert cli_main([*argv, "--model", str(inputs["e4e"])]) == 2
    assert "4 tuned generators for 2 latents" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_tune_refusals_leave_nothing_behind(tuned, tmp_path, capsys):
    inputs, out = tuned
    # A non-empty output without --overwrite; --resume where no run is unfinished.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    assert cli_main(tune_argv(inputs, tmp_path / "busy")) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main([*tune_argv(inputs, tmp_path / "busy"), "--resume"]) == 2
    assert "no unfinished tune" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["mine.txt"]
    # An output inside an input.
    assert cli_main(tune_argv(inputs, inputs["inv"] / "sub")) == 2
    assert "overlaps the input" in capsys.readouterr().err
    # --overwrite replaces only tune's own files.
    again = shutil.copytree(out, tmp_path / "again")
    (again / "notes.txt").write_text("mine")
    assert cli_main([*tune_argv(inputs, again, "--batch-size", "3", "--image-format", "png"), "--overwrite"]) == 0
    assert (again / "notes.txt").read_text() == "mine"
    assert (again / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()


def test_an_align_output_is_tuned_on_each_faces_aligned_crop(tuned, tmp_path):
    """The targets of an `invert --align` output are the face crops the encoder saw (jobs/sources.py), at
    the generator's size; the rows, names and faces.txt follow invert's."""
    pytest.importorskip("dlib")
    from e4e_jax.jobs import sources
    from e4e_jax.models.stylegan2 import Generator

    inputs, _ = tuned
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(inputs["photos"] / "input_img.jpg", photos / "face.jpg")
    inv = tmp_path / "inv"
    argv = ["invert", "--model", str(inputs["e4e"]), "--images", str(photos), "--output", str(inv), "--align"]
    assert cli_main([*argv, "--quiet"]) == 0
    out = tmp_path / "tuned"
    argv = tune_argv({**inputs, "inv": inv}, out, "--batch-size", "3", "--image-format", "png")
    assert cli_main(argv) == 0
    assert (out / "faces.txt").read_text() == "0\n"
    assert (out / "inversions.txt").read_text() == "inversions/00000_face_face0.png\n"
    (photo,) = json.loads((out / "metrics.json").read_text())["photos"]
    assert photo["key"] == "face.jpg#face0" and photo["lpips_after"] < photo["lpips_before"]
    # Its L2 before tuning is e4e's own reconstruction against the aligned crop at the generator's size.
    rows = sources.read_invert_output(inv, None, "--inversions")
    with sources.SourceLoader(rows.rows, rows.align, workers=0) as loader:
        crop = loader.load(rows.rows[0], (SIZE, SIZE))
    config, variables = bundle.load(inputs["e4e"], "e4e")
    gen = Generator(StyleGAN2Config.from_dict(config["architecture"]["generator"]))
    pivots = np.load(inv / "latents.npy")
    recon = np.asarray(gen.apply(variables["generator"], pivots, method=Generator.synthesize))[0]
    assert photo["l2_before"] == pytest.approx(float(np.mean((recon - crop) ** 2)), rel=1e-4)
