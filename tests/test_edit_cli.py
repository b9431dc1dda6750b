"""`e4e-jax edit` with the official InterFaceGAN / GANSpace files and SeFa, on a small generator."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from e4e_jax.cli import main as cli_main
from e4e_jax.inference import editing
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from e4e_jax.storage import bundle
from tests.assets import E4E_ASSETS, needs_assets

ASSETS = E4E_ASSETS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    cfg = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2)
    bundle.save(root / "g", "stylegan2", cfg.to_dict(), init_variables(cfg, jax.random.key(0)))
    inv = root / "inv"
    inv.mkdir()
    latents = np.random.default_rng(0).standard_normal((3, cfg.n_latent, 512)).astype(np.float32)
    np.save(inv / "latents.npy", latents)
    srcs = []
    for i in range(3):
        p = root / f"src{i}.png"
        Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(p)
        srcs.append(str(p))
    (inv / "files.txt").write_text("\n".join(srcs) + "\n")
    return root, cfg, latents


@needs_assets
def test_interfacegan_sweep_cli(setup):
    root, cfg, latents = setup
    out = root / "ifg"
    rc = cli_main(
        [
            "edit",
            "--model",
            str(root / "g"),
            "--latents",
            str(root / "inv"),
            "--output",
            str(out),
            "--interfacegan",
            str(ASSETS / "interfacegan_directions" / "age.pt"),
            "--strengths",
            "-3",
            "0",
            "3",
        ]
    )
    assert rc == 0
    edits = np.load(out / "latents.npy")
    v = editing.load_interfacegan_direction(ASSETS / "interfacegan_directions" / "age.pt")
    assert edits.shape == (3, 3, cfg.n_latent, 512)
    np.testing.assert_allclose(edits[2] - latents, np.broadcast_to(3 * v, latents.shape), atol=1e-5)
    np.testing.assert_array_equal(edits[1], latents)
    assert len(list((out / "images").glob("*.png"))) == 9
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape[1] > grid.shape[0]  # 3 rows of (source | inversion | 3 edits)


@needs_assets
def test_ganspace_cli_moves_only_chosen_layers(setup):
    root, cfg, latents = setup
    out = root / "gs"
    rc = cli_main(
        [
            "edit",
            "--model",
            str(root / "g"),
            "--latents",
            str(root / "inv" / "latents.npy"),
            "--output",
            str(out),
            "--ganspace",
            str(ASSETS / "ganspace_pca" / "ffhq_pca.pt"),
            "--component",
            "3",
            "--layers",
            "2-4",
            "--strengths",
            "5",
        ]
    )
    assert rc == 0
    edits = np.load(out / "latents.npy")[0]
    changed = np.abs(edits - latents).max(axis=(0, 2)) > 0
    assert changed.tolist() == [False, False, True, True, False, False]


def test_sefa_cli_and_bad_direction_shape(setup, capsys):
    root, cfg, latents = setup
    out = root / "sefa"
    assert (
        cli_main(
            [
                "edit",
                "--model",
                str(root / "g"),
                "--latents",
                str(root / "inv"),
                "--output",
                str(out),
                "--sefa",
                "0",
                "--layers",
                "0-1",
                "--strengths",
                "2",
            ]
        )
        == 0
    )
    edits = np.load(out / "latents.npy")[0]
    delta = edits - latents
    assert np.abs(delta[:, 2:]).max() == 0
    np.testing.assert_allclose(np.linalg.norm(delta[:, 0], axis=-1), 2.0, rtol=1e-5)  # unit eigenvector
    if ASSETS.is_dir():  # pose.pt has 18 layers; this generator has 6.
        rc = cli_main(
            [
                "edit",
                "--model",
                str(root / "g"),
                "--latents",
                str(root / "inv"),
                "--output",
                str(root / "bad"),
                "--interfacegan",
                str(ASSETS / "interfacegan_directions" / "pose.pt"),
                "--strengths",
                "1",
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2 and "pose.pt" in err and "(18, 512)" in err


def test_edit_folder_library_call_matches_the_command(setup):
    """`jobs.edit.edit_folder`, the call behind `e4e-jax edit` (and the quickstart), writes what the command
    writes; it asks for exactly one direction."""
    from e4e_jax.errors import EXIT_OK, UserError
    from e4e_jax.jobs import edit as edit_job

    root, cfg, latents = setup
    argv = ["--model", str(root / "g"), "--latents", str(root / "inv"), "--sefa", "1", "--strengths", "-1", "2"]
    assert cli_main(["edit", *argv, "--output", str(root / "by_cli")]) == 0
    opts = edit_job.EditOptions(
        model=root / "g", latents=root / "inv", output=root / "by_call", sefa=1, strengths=(-1.0, 2.0)
    )
    assert edit_job.edit_folder(opts) == EXIT_OK
    for name in ("latents.npy", "grid.png", "images/00002_src2_s+2.png", "images/00000_src0_s-1.png"):
        assert (root / "by_call" / name).read_bytes() == (root / "by_cli" / name).read_bytes(), name
    with pytest.raises(UserError, match="exactly one"):
        edit_job.edit_folder(
            edit_job.EditOptions(model=root / "g", latents=root / "inv", output=root / "none", strengths=(1.0,))
        )
