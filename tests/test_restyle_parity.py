"""ReStyle parity: official-format checkpoint -> real converter (CLI) -> 5 iterations in JAX vs the PyTorch
reference of the official encoders and inference loop (tests/refs/restyle_encoders.py).

The encoders are the official architectures (IR-SE50 or ResNet-34, 512-ch style blocks, 6 input channels);
the decoder is a tiny rosinality generator (64x64, channel_multiplier 1, n_mlp 2: 10 styles), so the
reconstructions are pooled *up* to the 256x256 frame as official face_pool does for any size. Compared at
tests/parity.py's tolerance: the average image, the latents after each of the 5 iterations, and the
last reconstruction. ReStyle-pSp and ReStyle-e4e on IR-SE50 (faces) share one set of weights (their keys
are the same); ResNet-34 runs ReStyle-e4e on the cars frame (192x256 input, rows 32:224).
"""

import shutil

import numpy as np
import pytest
import torch

from e4e_jax.inference import restyle
from e4e_jax.storage import bundle
from tests.official_restyle import build_reference, checkpoint_dict, official_opts
from tests.parity import assert_close, max_err
from tests.refs import restyle_encoders as ref
from tools.convert_weights.__main__ import main as convert_main

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

SIZE = 64
N_STYLES = 10
N_ITERS = 5  # official --n_iters_per_batch


def _convert(tmp, encoder_type, enc, dec, latent_avg, opts):
    """Save the official checkpoint, convert it with the CLI, load the bundle; the ~0.5 GB files are removed
    at once (the weights stay in memory). Returns (config.json, RestyleModel)."""
    ckpt, out = tmp / "restyle.pt", tmp / "bundle"
    torch.save(checkpoint_dict(encoder_type, enc, dec, latent_avg, opts), ckpt)
    try:
        assert convert_main(["restyle", str(ckpt), "--out", str(out)]) == 0
        config = bundle.read_config(out, "restyle")
        model = restyle.load_restyle(str(out), precision="highest")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return config, model


def _reference(enc, dec, latent_avg, images, dataset_type):
    net = ref.ReStyleNet(enc, dec, latent_avg).eval()
    with torch.no_grad():
        avg = ref.get_average_image(net, dataset_type)
        _, latents = ref.run_on_batch(torch.from_numpy(images), net, dataset_type, N_ITERS, avg)
        last, _ = dec([latents[-1]], input_is_latent=True, randomize_noise=False)
    nhwc = (0, 2, 3, 1)
    return avg.numpy().transpose(1, 2, 0)[None], np.stack([w.numpy() for w in latents]), last.numpy().transpose(nhwc)


def _check_against_reference(model, enc, dec, latent_avg, images, dataset_type):
    r_avg, r_latents, r_last = _reference(enc, dec, latent_avg, images, dataset_type)
    variables = restyle.with_average_image(model, model.variables)
    assert_close(variables[restyle.AVERAGE_IMAGE], r_avg, "average image")
    latents, last = restyle.make_restyle_fn(model, n_iters=N_ITERS)(variables, images.transpose(0, 2, 3, 1))
    assert latents.shape == (N_ITERS, images.shape[0], N_STYLES, 512)
    for t in range(N_ITERS):
        print(
            f"iteration {t + 1}: max err {max_err(latents[t], r_latents[t]):.2e}, max |ref| {np.abs(r_latents[t]).max():.2f}"
        )
        assert_close(latents[t], r_latents[t], f"latents after iteration {t + 1}")
    if dataset_type == "cars_encode":  # the cars frame of a 64x64 output: rows 8:56
        r_last = r_last[:, 8:56]
    assert_close(last, r_last, "last reconstruction")
    # Each iteration moves the codes (the test would not notice an iteration that is skipped otherwise).
    assert all(np.abs(r_latents[t + 1] - r_latents[t]).max() > 1e-2 for t in range(N_ITERS - 1))


@pytest.fixture(scope="module")
def irse_weights():
    enc, dec, latent_avg = build_reference("BackboneEncoder", SIZE)
    progressive = ref.ProgressiveBackboneEncoder(n_styles=N_STYLES, input_nc=6).eval()
    progressive.load_state_dict(enc.state_dict(), assign=True)  # the same tensors: ~0.5 GB less
    images = np.random.RandomState(0).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    return {
        "BackboneEncoder": enc,
        "ProgressiveBackboneEncoder": progressive,
        "dec": dec,
        "latent_avg": latent_avg,
        "images": images,
    }


@pytest.mark.parametrize(
    "encoder_type, mode", [("ProgressiveBackboneEncoder", "restyle_e4e"), ("BackboneEncoder", "restyle_psp")]
)
def test_irse50_iterations_match_official(irse_weights, encoder_type, mode, tmp_path):
    w = irse_weights
    opts = official_opts(encoder_type, SIZE)
    config, model = _convert(tmp_path, encoder_type, w[encoder_type], w["dec"], w["latent_avg"], opts)
    arch = config["architecture"]
    assert config["kind"] == "restyle" and arch["iterations"] == N_ITERS and arch["domain"] == "ffhq"
    assert arch["encoder"] == {
        "mode": mode,
        "encoder_type": encoder_type,
        "n_styles": N_STYLES,
        "num_layers": 50,
        "backbone_mode": "ir_se",
        "input_nc": 6,
        "input_size": [256, 256],
    }
    assert arch["opts"]["n_iters_per_batch"] == 5 and arch["opts"]["checkpoint_path"] is None
    assert isinstance(model, restyle.RestyleModel) and model.iterations == N_ITERS
    _check_against_reference(model, w[encoder_type], w["dec"], w["latent_avg"], w["images"], "ffhq_encode")


def test_resnet34_cars_iterations_match_official(tmp_path):
    encoder_type = "ResNetProgressiveBackboneEncoder"
    enc, dec, latent_avg = build_reference(encoder_type, SIZE, seed=3)
    opts = official_opts(encoder_type, SIZE, dataset_type="cars_encode")
    config, model = _convert(tmp_path, encoder_type, enc, dec, latent_avg, opts)
    arch = config["architecture"]
    assert arch["domain"] == "cars" and model.input_hw == (192, 256)
    assert (arch["encoder"]["mode"], arch["encoder"]["backbone_mode"], arch["encoder"]["num_layers"]) == (
        "restyle_e4e_resnet",
        "resnet",
        34,
    )
    images = np.random.RandomState(1).uniform(-1, 1, (2, 3, 192, 256)).astype(np.float32)
    _check_against_reference(model, enc, dec, latent_avg, images, "cars_encode")
