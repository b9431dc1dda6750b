"""A converted W-encoder bundle (official SingleStyleCodeEncoder checkpoint layout) through the existing
commands: `e4e-jax invert`, `edit` and `evaluate`. Its codes are one w repeated for every layer."""

import json

import numpy as np
import torch
from PIL import Image

from e4e_jax.cli import main as cli_main
from tests.official_e4e import save_random_e4e
from tests.parity import max_err, tolerance
from tools.convert_weights.__main__ import main as convert_main

SIZE, N_STYLES = 16, 6  # tiny generator; the encoder is the official IR-SE50 at 256x256
OPTS = {
    "encoder_type": "SingleStyleCodeEncoder",
    "dataset_type": "ffhq_encode",
    "start_from_latent_avg": True,
    "stylegan_size": SIZE,
}
STRENGTH = 3.0


def _all_rows_equal(codes: np.ndarray) -> bool:
    """(..., n_styles, 512): every style layer of each code is the same vector."""
    return bool(np.all(codes == codes[..., :1, :]))


def test_w_bundle_inverts_edits_and_evaluates(tmp_path):
    ref = save_random_e4e(tmp_path / "w.pt", SIZE, OPTS)
    model = tmp_path / "w_bundle"
    assert convert_main(["e4e", str(tmp_path / "w.pt"), "--out", str(model)]) == 0
    imgs = tmp_path / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # 256x256: the official test transform leaves them as they are
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), np.uint8)).save(imgs / f"img{i}.png")

    inv = tmp_path / "inv"
    assert (
        cli_main(["invert", "--model", str(model), "--images", str(imgs), "--output", str(inv), "--batch-size", "2"])
        == 0
    )
    latents = np.load(inv / "latents.npy")
    assert latents.shape == (2, N_STYLES, 512) and _all_rows_equal(latents)
    # The official forward on the same images: encoder(x) + latent_avg (pSp.forward, start_from_latent_avg).
    x = np.stack([np.asarray(Image.open(imgs / f"img{i}.png"), np.float32) / 127.5 - 1 for i in range(2)])
    with torch.no_grad():
        r = (ref["enc"](torch.from_numpy(x.transpose(0, 3, 1, 2))) + ref["latent_avg"]).numpy()
    assert max_err(latents, r) <= tolerance(r), max_err(latents, r)

    # An InterFaceGAN direction moves every layer alike: the edits stay in W.
    direction = 0.5 * torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
    torch.save(direction, tmp_path / "age.pt")
    edits = tmp_path / "edits"
    assert (
        cli_main(
            [
                "edit",
                "--model",
                str(model),
                "--latents",
                str(inv),
                "--output",
                str(edits),
                "--interfacegan",
                str(tmp_path / "age.pt"),
                "--strengths",
                str(STRENGTH),
            ]
        )
        == 0
    )
    edited = np.load(edits / "latents.npy")
    assert edited.shape == (1, 2, N_STYLES, 512) and _all_rows_equal(edited)
    np.testing.assert_allclose(
        edited[0] - latents, np.broadcast_to(STRENGTH * direction.numpy(), latents.shape), atol=1e-5
    )

    metrics = tmp_path / "metrics"
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(model),
                "--images",
                str(imgs),
                "--output",
                str(metrics),
                "--directions",
                str(tmp_path / "age.pt"),
                "--num-samples",
                "2",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    report = json.loads((metrics / "metrics.json").read_text())
    assert report["n_images"] == 2 and np.isfinite(report["distortion"]["l2"])
    latent = report["latent"]
    # Zero by construction (the variation's mean over 6 equal rows may round in the last bit).
    assert latent["delta_norm"] == 0.0 and latent["variation"] <= 1e-6 * np.abs(latents).max()
    assert np.isfinite(latent["recovery"]) and latent["recovery"] > 0
    assert np.isfinite(report["editability"]["lec"])
