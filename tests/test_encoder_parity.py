"""e4e / pSp / W encoder parity: official-layout checkpoint -> real converter (CLI) -> JAX vs PyTorch reference.

The encoder is the official architecture (IR-SE50, 512-ch style blocks, 256x256 input); the decoder is a
tiny rosinality generator (64x64, channel_multiplier 1, n_mlp 2) so n_styles = 10 and the style
blocks read all three pyramid levels (c3: 0-2, p2: 3-6, p1: 7-9). The W encoder (SingleStyleCodeEncoder)
has its own checkpoint (IR-SE50 body, pool, one EqualLinear) with the same decoder.
"""

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.models.encoder import Encoder4Editing, add_latent_avg
from e4e_jax.models.encoder_types import EncoderConfig
from e4e_jax.models.resampling import upsample_bilinear_align_corners
from e4e_jax.storage import bundle
from tests.official_e4e import save_random_e4e
from tests.parity import max_err as _err
from tests.parity import tolerance as _tol  # noqa: E402
from tests.refs import psp_encoders as ref
from tools.convert_weights import e4e as e4e_conv
from tools.convert_weights.__main__ import main as convert_main

SIZE = 64
N_STYLES = 2 * int(math.log2(SIZE)) - 2
OPTS = {
    "encoder_type": "Encoder4Editing",
    "dataset_type": "ffhq_encode",
    "stylegan_size": SIZE,
    "start_from_latent_avg": True,
    "input_nc": 3,
    "lpips_lambda": 0.8,
    "progressive_steps": [0, 20000],
    "device": "cuda:0",
    "checkpoint_path": None,
    "learning_rate": 1e-4,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e4e")
    ckpt = tmp / "e4e.pt"
    ref_models = save_random_e4e(ckpt, SIZE, OPTS)  # enc, dec, state, latent_avg
    out = tmp / "bundle"
    assert convert_main(["e4e", str(ckpt), "--out", str(out)]) == 0
    config, variables = bundle.load(out, "e4e")
    shutil.rmtree(tmp)  # 1.3 GB that no test reads again (the weights are in memory): CI's disk is small
    images = np.random.RandomState(0).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    return dict(
        **ref_models,
        config=config,
        variables=variables,
        images=images,
        x=jnp.asarray(images.transpose(0, 2, 3, 1)),
    )


@pytest.fixture(scope="module")
def e4e_apply(setup):
    arch = setup["config"]["architecture"]["encoder"]
    model = Encoder4Editing(n_styles=arch["n_styles"], mode=arch["mode"], precision="highest")
    return jax.jit(lambda v, x, stage: model.apply(v, x, progressive_stage=stage))


def test_bundle_config(setup):
    cfg = setup["config"]
    arch = cfg["architecture"]
    assert arch["encoder"] == {
        "mode": "e4e",
        "encoder_type": "Encoder4Editing",
        "num_layers": 50,
        "backbone_mode": "ir_se",
        "n_styles": N_STYLES,
        "input_nc": 3,
        "input_size": [256, 256],
    }
    assert arch["generator"]["size"] == SIZE and arch["domain"] == "ffhq"
    assert arch["opts"]["progressive_steps"] == [0, 20000] and "checkpoint_path" in arch["opts"]
    assert cfg["latent_avg_source"] == "checkpoint latent_avg"
    np.testing.assert_array_equal(setup["variables"]["latent_avg"], setup["latent_avg"].numpy())


@pytest.mark.parametrize("stage", [None, 0, 2, 8])
def test_e4e_latents(setup, e4e_apply, stage):
    enc = setup["enc"]
    enc.progressive_stage = 18 if stage is None else stage
    with torch.no_grad():
        r = enc(torch.from_numpy(setup["images"])).numpy()
    traced = N_STYLES if stage is None else stage
    ours = e4e_apply(setup["variables"]["encoder"], setup["x"], jnp.int32(traced))
    assert ours.shape == (2, N_STYLES, 512)
    err = _err(ours, r)
    print(f"e4e stage {stage}: max err {err:.2e}, max |ref| {np.abs(r).max():.2f}")
    assert err <= _tol(r), (stage, err)
    if stage is not None:  # Rows beyond the stage are exactly w0.
        same = np.all(np.asarray(ours) == np.asarray(ours)[:, :1], axis=(0, 2))
        np.testing.assert_array_equal(same[1:], np.arange(1, N_STYLES) > stage)
    if stage == 2:  # A python int gives the same result as the traced scalar.
        py = Encoder4Editing(n_styles=N_STYLES, precision="highest").apply(
            setup["variables"]["encoder"], setup["x"], progressive_stage=stage
        )
        assert _err(py, ours) <= 1e-5 * max(1.0, float(np.abs(r).max()))


def test_fused_style_heads_match_torch(setup):
    """fuse_style_blocks (inference default of load_e4e) against the official-layout reference."""
    enc = setup["enc"]
    enc.progressive_stage = 18
    with torch.no_grad():
        r = enc(torch.from_numpy(setup["images"])).numpy()
    fused = Encoder4Editing(n_styles=N_STYLES, precision="highest", fuse_style_blocks=True)
    ours = jax.jit(fused.apply)(setup["variables"]["encoder"], setup["x"])
    err = _err(ours, r)
    print(f"fused style heads: max err {err:.2e}, max |ref| {np.abs(r).max():.2f}")
    assert err <= _tol(r), err


def test_psp_mode(setup, tmp_path):
    psp = ref.GradualStyleEncoder(50, "ir_se", stylegan_size=SIZE).eval()
    psp.load_state_dict(setup["enc"].state_dict())
    with torch.no_grad():
        r = psp(torch.from_numpy(setup["images"])).numpy()
    path = tmp_path / "psp.pt"
    torch.save(
        {
            "state_dict": setup["state"],
            "latent_avg": setup["latent_avg"],
            "opts": {**OPTS, "encoder_type": "GradualStyleEncoder"},
        },
        path,
    )
    arch, variables, _ = e4e_conv.convert([path])
    assert arch["encoder"]["mode"] == "psp"
    ours = jax.jit(lambda v, x: Encoder4Editing(n_styles=N_STYLES, mode="psp", precision="highest").apply(v, x))(
        variables["encoder"], setup["x"]
    )
    err = _err(ours, r)
    print(f"psp: max err {err:.2e}, max |ref| {np.abs(r).max():.2f}")
    assert err <= _tol(r)


def test_end_to_end_images(setup, e4e_apply):
    """pSp.forward: decoder([encoder(x) + latent_avg], input_is_latent=True, randomize_noise=False)."""
    from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config

    enc = setup["enc"]
    enc.progressive_stage = 18
    with torch.no_grad():
        codes = enc(torch.from_numpy(setup["images"])) + setup["latent_avg"].repeat(2, 1, 1)
        r_img, _ = setup["dec"]([codes], input_is_latent=True, randomize_noise=False)
    r_img = r_img.numpy().transpose(0, 2, 3, 1)
    v = setup["variables"]
    codes_j = add_latent_avg(e4e_apply(v["encoder"], setup["x"], jnp.int32(N_STYLES)), v["latent_avg"])
    gen = Generator(StyleGAN2Config.from_dict(setup["config"]["architecture"]["generator"]), precision="highest")
    img = jax.jit(lambda v, w: gen.apply(v, w, input_is_latent=True, noise_mode="const"))(v["generator"], codes_j)
    err = _err(img, r_img)
    print(f"images: max err {err:.2e}, max |ref| {np.abs(r_img).max():.2f}")
    assert img.shape == r_img.shape and err <= _tol(r_img)


def test_upsample_matches_torch_align_corners():
    x = np.random.RandomState(1).randn(2, 3, 5, 7).astype(np.float32)
    for size in [(10, 14), (9, 13), (5, 7), (1, 1)]:
        r = (
            torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=True)
            .numpy()
            .transpose(0, 2, 3, 1)
        )
        ours = upsample_bilinear_align_corners(jnp.asarray(x.transpose(0, 2, 3, 1)), size, "highest")
        assert _err(ours, r) <= 1e-5


def test_cars_input_192x256(setup, e4e_apply):
    """Official cars input (192x256): every style block still reduces to 1x1."""
    enc = setup["enc"]
    enc.progressive_stage = 18
    x = np.random.RandomState(2).uniform(-1, 1, (1, 3, 192, 256)).astype(np.float32)
    with torch.no_grad():
        r = enc(torch.from_numpy(x)).numpy()
    ours = e4e_apply(setup["variables"]["encoder"], jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.int32(N_STYLES))
    assert _err(ours, r) <= _tol(r)


def test_add_latent_avg_shapes():
    codes = jnp.ones((2, 4, 512))
    for shape in [(512,), (1, 512), (4, 512)]:
        out = add_latent_avg(codes, np.full(shape, 2.0, np.float32))
        np.testing.assert_array_equal(out, 3.0)
    with pytest.raises(ValueError, match="latent_avg"):
        add_latent_avg(codes, np.zeros((3, 512)))


# ----------------------------------------------------------------------------------- converter errors
def _save(path, **ckpt):
    """Each checkpoint here holds the full official encoder (~0.7 GB): tests write them to their own tmp_path
    (removed when the test passes, pytest.ini) and test_errors removes each once it has been checked."""
    torch.save(ckpt, path)
    return path


def _refused(path, error, match):
    """converter(path) raises `error` matching `match`; the file is removed after the check."""
    try:
        with pytest.raises(error, match=match):
            e4e_conv.convert([path])
    finally:
        path.unlink()


def test_training_state_entries_are_ignored(setup, tmp_path):
    """e4e's coach with save_training_data also saves global_step, optimizer, best_val_loss and the latent
    discriminator's state next to the weights (docs/converters.md)."""
    path = _save(
        tmp_path / "training.pt",
        state_dict=setup["state"],
        latent_avg=setup["latent_avg"],
        opts=OPTS,
        global_step=5000,
        best_val_loss=0.25,
        optimizer={"state": {}, "param_groups": [{"lr": 1e-4}]},
        discriminator_state_dict={"mlp.0.weight": torch.zeros(512, 512)},
        discriminator_optimizer_state_dict={"state": {}, "param_groups": []},
    )
    arch, variables, _ = e4e_conv.convert([path])
    assert arch == setup["config"]["architecture"]
    jax.tree.map(np.testing.assert_array_equal, variables, setup["variables"])


def test_missing_latent_avg_is_computed_from_mapping(setup, tmp_path):
    path = _save(tmp_path / "no_avg.pt", state_dict=setup["state"], opts={"encoder_type": "Encoder4Editing"})
    n = 20000
    arch, variables, extra = e4e_conv.convert([path], latent_avg_samples=str(n))
    assert extra["latent_avg_source"] == f"computed from {n} mapped z, seed 0"
    assert "dataset_type" not in arch and arch["encoder"]["mode"] == "e4e"
    la = variables["latent_avg"]
    assert la.shape == (N_STYLES, 512) and np.all(la == la[:1])
    np.testing.assert_array_equal(variables["generator"]["buffers"]["w_avg"], la[0])
    # Compare with the torch decoder's own mean_latent on independent samples (Monte Carlo error).
    with torch.no_grad():
        w = setup["dec"].style(torch.randn(n, 512, generator=torch.Generator().manual_seed(5)))
    se = w.std(0).numpy() / math.sqrt(n)
    assert np.all(np.abs(la[0] - w.mean(0).numpy()) <= 6 * math.sqrt(2) * se + 1e-6)


def test_start_from_latent_avg_false_gives_zero_latent_avg(setup, tmp_path):
    path = _save(tmp_path / "no_start.pt", state_dict=setup["state"], opts={**OPTS, "start_from_latent_avg": False})
    _, variables, extra = e4e_conv.convert([path], latent_avg_samples="100")
    assert "start_from_latent_avg is False" in extra["latent_avg_source"]
    assert not np.any(variables["latent_avg"])


def test_errors(setup, tmp_path):
    tmp, state = tmp_path, setup["state"]
    p = _save(
        tmp / "unknown_type.pt",
        state_dict=state,
        latent_avg=setup["latent_avg"],
        opts={**OPTS, "encoder_type": "BackboneEncoderUsingLastLayerIntoWPlus"},
    )
    _refused(p, ValueError, r"unknown_type\.pt.*BackboneEncoderUsingLastLayerIntoWPlus.*not supported")
    # An Encoder4Editing state dict under the W encoder's type: the hint names the likely cause.
    p = _save(
        tmp / "e4e_as_w.pt",
        state_dict=state,
        latent_avg=setup["latent_avg"],
        opts={**OPTS, "encoder_type": "SingleStyleCodeEncoder"},
    )
    _refused(p, ValueError, r"e4e_as_w\.pt.*not a SingleStyleCodeEncoder.*styles")

    dec_sd = {k: v for k, v in setup["dec"].state_dict().items()}
    p = _save(tmp / "g.pt", g_ema=dec_sd, latent_avg=torch.zeros(512))
    _refused(p, ValueError, "StyleGAN2 generator checkpoint.*stylegan2")

    p = _save(
        tmp / "extra_key.pt",
        state_dict={**state, "encoder.bogus.weight": torch.zeros(3)},
        latent_avg=setup["latent_avg"],
        opts=OPTS,
    )
    _refused(p, KeyError, "encoder.bogus.weight")

    missing = dict(state)
    del missing["encoder.styles.4.convs.2.bias"]
    p = _save(tmp / "missing_key.pt", state_dict=missing, latent_avg=setup["latent_avg"], opts=OPTS)
    _refused(p, KeyError, r"encoder\.styles\.4\.convs\.2\.bias")


# ------------------------------------------------------------------- W encoder (SingleStyleCodeEncoder)
W_OPTS = {**OPTS, "encoder_type": "SingleStyleCodeEncoder"}


@pytest.fixture(scope="module")
def w_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("w_encoder")
    ckpt = tmp / "w_encoder.pt"
    ref_models = save_random_e4e(ckpt, SIZE, W_OPTS)  # enc, dec, state, latent_avg
    assert convert_main(["e4e", str(ckpt), "--out", str(tmp / "bundle")]) == 0
    config, variables = bundle.load(tmp / "bundle", "e4e")
    shutil.rmtree(tmp)  # as setup's
    return dict(**ref_models, config=config, variables=variables)


def test_w_bundle_config(w_setup):
    arch = w_setup["config"]["architecture"]
    assert arch["encoder"] == {
        "mode": "w",
        "encoder_type": "SingleStyleCodeEncoder",
        "num_layers": 50,
        "backbone_mode": "ir_se",
        "n_styles": N_STYLES,
        "input_nc": 3,
        "input_size": [256, 256],
    }
    params = w_setup["variables"]["encoder"]["params"]
    assert sorted(params) == ["backbone", "linear"] and params["linear"]["weight"].shape == (512, 512)
    # torch stores EqualLinear's weight (out, in); ours is (in, out).
    np.testing.assert_array_equal(params["linear"]["weight"], w_setup["state"]["encoder.linear.weight"].numpy().T)


def test_w_encoder_latents_and_images(w_setup):
    """Codes and pSp.forward images (codes + latent_avg through the decoder) of the converted W encoder."""
    from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config

    images = np.random.RandomState(3).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    with torch.no_grad():
        r = w_setup["enc"](torch.from_numpy(images))
        r_img, _ = w_setup["dec"](
            [r + w_setup["latent_avg"].repeat(2, 1, 1)], input_is_latent=True, randomize_noise=False
        )
    r, r_img = r.numpy(), r_img.numpy().transpose(0, 2, 3, 1)
    arch = w_setup["config"]["architecture"]
    v = w_setup["variables"]
    enc = EncoderConfig.from_dict(arch["encoder"]).build(precision="highest")
    gen = Generator(StyleGAN2Config.from_dict(arch["generator"]), precision="highest")

    @jax.jit
    def forward(v, x):
        codes = enc.apply(v["encoder"], x)
        return codes, gen.apply(
            v["generator"], add_latent_avg(codes, v["latent_avg"]), input_is_latent=True, noise_mode="const"
        )

    codes, img = forward(v, jnp.asarray(images.transpose(0, 2, 3, 1)))
    codes = np.asarray(codes)
    assert codes.shape == (2, N_STYLES, 512) and np.all(codes == codes[:, :1])  # one w for every layer
    err, err_img = _err(codes, r), _err(img, r_img)
    print(
        f"W encoder: latents max err {err:.2e} (max |ref| {np.abs(r).max():.2f}), "
        f"images {err_img:.2e} (max |ref| {np.abs(r_img).max():.2f})"
    )
    assert err <= _tol(r) and img.shape == r_img.shape and err_img <= _tol(r_img)


def test_w_encoder_type_from_option_when_opts_lack_it(w_setup, tmp_path):
    tmp = tmp_path
    opts = {k: v for k, v in W_OPTS.items() if k != "encoder_type"}
    path = _save(tmp / "w_no_type.pt", state_dict=w_setup["state"], latent_avg=w_setup["latent_avg"], opts=opts)
    # Official default Encoder4Editing does not fit; the error says what to pass.
    with pytest.raises(ValueError, match="--option encoder_type=SingleStyleCodeEncoder"):
        e4e_conv.convert([path])
    out = tmp / "from_option"
    assert convert_main(["e4e", str(path), "--out", str(out), "--option", "encoder_type=SingleStyleCodeEncoder"]) == 0
    config, variables = bundle.load(out, "e4e")
    assert config["architecture"]["encoder"] == w_setup["config"]["architecture"]["encoder"]
    for a, b in zip(jax.tree.leaves(variables["encoder"]), jax.tree.leaves(w_setup["variables"]["encoder"])):
        np.testing.assert_array_equal(a, b)
