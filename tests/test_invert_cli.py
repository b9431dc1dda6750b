"""`e4e-jax invert` on a folder mixing the official sample photos with broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from e4e_jax import bundle
from e4e_jax.cli import main as cli_main
from e4e_jax.models.encoder import Encoder4Editing
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from tests.assets import E4E_ASSETS

ASSETS = E4E_ASSETS / "images"  # optional here: the official photos join the mixed folder if present


# A small IR-SE encoder (the tiny preset's sizes) for tests that exercise the job, not the network.
SMALL_ENCODER = {"widths": [16, 32, 64, 128], "units": [1, 1, 1, 1], "style_channels": 128}


def make_e4e_bundle(path: Path, size: int = 16, domain: str = "ffhq", encoder_sizes: dict | None = None) -> Path:
    """A random-weight e4e bundle (full IR-SE50 encoder unless `encoder_sizes`, small generator)
    written by bundle.save."""
    gen_cfg = StyleGAN2Config(size=size, channels=(16,) * (int(np.log2(size)) - 1), n_mlp=2)
    gen_vars = init_variables(gen_cfg, jax.random.key(0))
    sizes = encoder_sizes or {}
    enc = Encoder4Editing(
        n_styles=gen_cfg.n_latent, **{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()}
    )
    hw = (192, 256) if domain == "cars" else (256, 256)
    enc_vars = jax.jit(enc.init)(jax.random.key(1), jnp.zeros((1, *hw, 3)))
    latent_avg = np.asarray(jax.random.normal(jax.random.key(2), (gen_cfg.n_latent, 512))) * 0.1
    arch = {
        "encoder": {
            "mode": "e4e",
            "encoder_type": "Encoder4Editing",
            "n_styles": gen_cfg.n_latent,
            "num_layers": 50,
            "backbone_mode": "ir_se",
            "input_size": list(hw),
            **sizes,
        },
        "generator": gen_cfg.to_dict(),
        "domain": domain,
    }
    variables = {"encoder": enc_vars, "generator": gen_vars, "latent_avg": latent_avg}
    return bundle.save(path, "e4e", arch, variables)


@pytest.fixture(scope="module")
def e4e_bundle(shared_dir):
    # The job, its outputs and the kernel's order are what these tests check, not the network: the small
    # encoder has the same structure (IR-SE units, BatchNorm, PReLU) at a fraction of the compile time, and
    # the bundle is the session's shared one (tests/shared_files.py).
    from tests import shared_files

    return shared_files.small_e4e_bundle(shared_dir)


def _mixed_folder(root: Path) -> tuple[list[str], list[str]]:
    root.mkdir()
    good = []
    if ASSETS.is_dir():
        for p in sorted(ASSETS.glob("*.jpg")):
            shutil.copy(p, root / p.name)
            good.append(p.name)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 200), np.uint8), "L").save(root / "gray.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 4), np.uint8), "RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), np.uint8)).save(root / "exact256.png")
    good += ["gray.png", "rgba.png", "exact256.png"]
    full = (root / "exact256.png").read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("this is not an image")
    Image.fromarray(rng.integers(0, 255, (4, 4, 3), np.uint8)).save(root / "tiny.png")
    return sorted(good), sorted(["truncated.png", "empty.jpg", "notes.png", "tiny.png"])


def test_invert_folder_with_bad_files(e4e_bundle, tmp_path, capsys):
    good, bad = _mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = cli_main(
        [
            "invert",
            "--model",
            str(e4e_bundle),
            "--images",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--batch-size",
            "3",
        ]
    )
    assert rc == 3, "partial success must be signalled by exit status 3"
    files = [Path(l).name for l in (out / "files.txt").read_text().splitlines()]
    assert files == good
    latents = np.load(out / "latents.npy")
    assert latents.shape == (len(good), 6, 512) and latents.dtype == np.float32
    names = (out / "inversions.txt").read_text().splitlines()
    assert len(names) == len(good) and all(n.endswith(".jpg") and (out / n).is_file() for n in names)
    assert sorted(p.name for p in (out / "inversions").iterdir()) == sorted(Path(n).name for n in names)
    report = json.loads((out / "report.json").read_text())
    assert sorted(Path(s["file"]).name for s in report["skipped"]) == bad
    assert all(s["reason"] for s in report["skipped"])
    assert "skipped" in capsys.readouterr().err

    # The CLI's latents equal a direct encoder pass on the same preprocessed image.
    from e4e_jax import inversion
    from e4e_jax.data import folder

    model = inversion.load_e4e(str(e4e_bundle))
    x = folder.load_image(tmp_path / "in" / "exact256.png", model.input_hw)
    direct = inversion.encode(model, model.variables, jnp.asarray(x[None]))
    np.testing.assert_allclose(latents[files.index("exact256.png")], np.asarray(direct)[0], atol=1e-4)


def test_invert_all_good_exits_zero_and_refuses_nonempty_output(e4e_bundle, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(src / "a.png")
    out = tmp_path / "out"
    assert (
        cli_main(["invert", "--model", str(e4e_bundle), "--images", str(src), "--output", str(out), "--no-images"]) == 0
    )
    assert np.load(out / "latents.npy").shape[0] == 1
    assert cli_main(["invert", "--model", str(e4e_bundle), "--images", str(src), "--output", str(out)]) == 2


def test_invert_rejects_wrong_bundle_kind(tmp_path, capsys):
    cfg = StyleGAN2Config(size=8, channels=(8, 8), n_mlp=1)
    bundle.save(tmp_path / "g", "stylegan2", cfg.to_dict(), init_variables(cfg, jax.random.key(0)))
    (tmp_path / "in").mkdir()
    rc = cli_main(
        ["invert", "--model", str(tmp_path / "g"), "--images", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    )
    assert rc == 2 and "'stylegan2' bundle, but a 'e4e' bundle" in capsys.readouterr().err


def test_cars_latent_trim_and_crop(tmp_path):
    from e4e_jax import inversion

    path = make_e4e_bundle(tmp_path / "cars", size=16, domain="cars", encoder_sizes=SMALL_ENCODER)
    model = inversion.load_e4e(str(path))
    assert model.input_hw == (192, 256) and model.is_cars
    lat, img = inversion.make_invert_fn(model)(model.variables, jnp.zeros((1, 192, 256, 3)))
    assert lat.shape == (1, 6, 512)
    assert img.shape == (1, 12, 16, 3)  # rows 64:448 of 512, scaled to 16: rows 2:14.


def test_iter_invert_keeps_order_with_a_batch_in_flight(e4e_bundle):
    """Batches (one empty, one split into chunks) come back in order, each equal to inverting it alone."""
    from e4e_jax import inversion

    model = inversion.load_e4e(str(e4e_bundle))
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, (n, 256, 256, 3)).astype(np.float32) for n in (2, 0, 3, 1)]
    batches = [(x, [f"b{k}_{i}" for i in range(len(x))], [f"s{k}"]) for k, x in enumerate(xs)]
    out = list(inversion.iter_invert(model, iter(batches), batch_size=2))
    assert [o[2] for o in out] == [b[1] for b in batches] and [o[3] for o in out] == [b[2] for b in batches]
    invert = inversion.make_invert_fn(model)
    for (lat, img, _, _), x in zip(out, xs):
        assert lat.shape == (len(x), model.gen_config.n_latent, 512)
        if len(x) == 0:
            assert img is None
            continue
        ref_lat, ref_img = invert(model.variables, jnp.asarray(x))
        np.testing.assert_allclose(lat, np.asarray(ref_lat), atol=1e-4)
        np.testing.assert_allclose(img, np.asarray(ref_img), atol=1e-4)


def test_bf16_model_stores_conv_kernels_cast_with_the_same_result(e4e_bundle):
    from e4e_jax import inversion

    model = inversion.load_e4e(str(e4e_bundle), dtype="bfloat16")
    _, stored = bundle.load(e4e_bundle, "e4e")
    kinds = {str(l.dtype) for l in jax.tree.leaves(model.variables["encoder"]["params"]["backbone"])}
    assert kinds == {"bfloat16", "float32"}  # conv kernels cast, BN / PReLU parameters kept
    x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 256, 256, 3)).astype(np.float32))
    invert = inversion.make_invert_fn(model)
    lat_cast, img_cast = invert(model.variables, x)
    lat_f32, img_f32 = invert(stored, x)
    np.testing.assert_array_equal(np.asarray(lat_cast), np.asarray(lat_f32))
    np.testing.assert_array_equal(np.asarray(img_cast), np.asarray(img_f32))
