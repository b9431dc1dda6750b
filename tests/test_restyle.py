"""ReStyle in JAX on toy sizes: the encoder schema, the 'restyle' bundle, and the iterative inference
(`e4e_jax/inference/restyle.py`): both loop forms, the iteration formula step by step, images modes, sharding.
Parity with the official code at the official sizes: tests/test_restyle_parity.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.inference import render, restyle
from e4e_jax.models import resampling
from e4e_jax.models.encoder_types import ENCODER_TYPES, RESTYLE_ENCODER_TYPES, EncoderConfig, mode_of
from e4e_jax.models.resnet import ResNet34Backbone, basic_block_specs
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from e4e_jax.storage import bundle, e4e_bundle, restyle_bundle
from e4e_jax.storage.e4e_bundle import E4EArchitecture
from e4e_jax.storage.restyle_bundle import RestyleArchitecture

ROOT = Path(__file__).resolve().parents[1]
TOY = dict(widths=(8, 16, 16, 32), units=(1, 1, 1, 1))


def make_restyle_bundle(path: Path, domain: str = "ffhq", mode: str = "restyle_e4e", iterations: int = 3) -> Path:
    """A random-weight restyle bundle with a toy IR-SE encoder (32x32 input; cars 24x32) and a 16x16 generator."""
    gen_cfg = StyleGAN2Config(size=16, channels=(16,) * 3, n_mlp=2)
    hw = (24, 32) if domain == "cars" else (32, 32)
    enc = EncoderConfig(mode=mode, n_styles=gen_cfg.n_latent, input_nc=6, input_size=hw, **TOY)
    enc_vars = jax.jit(enc.build().init)(jax.random.key(1), jnp.zeros((1, *hw, 6)))
    latent_avg = np.asarray(jax.random.normal(jax.random.key(2), (gen_cfg.n_latent, 512))) * 0.3
    arch = RestyleArchitecture.create(enc, gen_cfg, f"{domain}_encode", {"n_iters_per_batch": 5}, iterations)
    variables = {"encoder": enc_vars, "generator": init_variables(gen_cfg, jax.random.key(0)), "latent_avg": latent_avg}
    return restyle_bundle.save(path, arch, variables)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return restyle.load_restyle(str(make_restyle_bundle(tmp_path_factory.mktemp("restyle") / "b")))


def _images(model, batch=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, *model.input_hw, 3), minval=-1, maxval=1)


# ----------------------------------------------------------------------------------- schema and bundle
def test_encoder_types_schema():
    resnet = dict(backbone_mode="resnet", num_layers=34)
    for etype, mode in RESTYLE_ENCODER_TYPES.items():
        kw = resnet if "resnet" in mode else {}
        cfg = EncoderConfig(mode=mode, n_styles=4, input_nc=6, **kw)
        assert cfg.iterative and cfg.encoder_type == etype
        assert EncoderConfig.from_dict(cfg.to_dict(), RESTYLE_ENCODER_TYPES) == cfg
        assert mode_of({"encoder_type": etype}, RESTYLE_ENCODER_TYPES) == mode
    assert not any(EncoderConfig(mode=m, n_styles=4).iterative for m in ENCODER_TYPES.values())
    with pytest.raises(ValueError, match="ResNet-34 backbone: backbone_mode='resnet', num_layers=34"):
        EncoderConfig(mode="restyle_psp_resnet", n_styles=4)
    with pytest.raises(ValueError, match="has an IR backbone"):
        EncoderConfig(mode="restyle_psp", n_styles=4, **resnet)
    with pytest.raises(ValueError, match="encoder_type 'BackboneEncoder' unknown"):
        EncoderConfig.from_dict({"encoder_type": "BackboneEncoder", "n_styles": 4})  # an e4e bundle's reader


def test_architectures_keep_their_encoders_apart():
    gen = StyleGAN2Config(size=16, channels=(16,) * 3)
    e4e = EncoderConfig(mode="e4e", n_styles=gen.n_latent)
    rs = EncoderConfig(mode="restyle_e4e", n_styles=gen.n_latent, input_nc=6)
    with pytest.raises(ValueError, match="the encoder of a 'e4e' bundle is one of"):
        E4EArchitecture.create(rs, gen)
    with pytest.raises(ValueError, match="the encoder of a 'restyle' bundle is one of"):
        RestyleArchitecture.create(e4e, gen)
    with pytest.raises(ValueError, match="6 channels"):
        RestyleArchitecture.create(EncoderConfig(mode="restyle_e4e", n_styles=gen.n_latent), gen)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        RestyleArchitecture.create(rs, gen, iterations=0)
    arch = RestyleArchitecture.create(rs, gen, "cars_encode", {"a": 1}, iterations=2)
    assert arch.domain == "cars" and RestyleArchitecture.from_dict(arch.to_dict()) == arch
    assert arch.to_dict()["iterations"] == 2 and "iterations" not in E4EArchitecture.create(e4e, gen).to_dict()


def test_bundle_kinds_are_refused_by_the_other_reader(toy, tmp_path):
    path = Path(toy.source)
    config = bundle.read_config(path)
    assert config["kind"] == "restyle" and config["architecture"]["iterations"] == 3
    with pytest.raises(bundle.BundleError, match="holds a 'restyle' bundle, but a 'e4e' bundle is needed"):
        e4e_bundle.load(path)
    e4e_dir = tmp_path / "e4e"
    gen = StyleGAN2Config(size=16, channels=(16,) * 3, n_mlp=2)
    enc = EncoderConfig(mode="e4e", n_styles=gen.n_latent, input_size=(32, 32), style_channels=32, **TOY)
    variables = {
        "encoder": enc.build().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))),
        "generator": init_variables(gen, jax.random.key(0)),
        "latent_avg": np.zeros((gen.n_latent, 512), np.float32),
    }
    e4e_bundle.save(e4e_dir, E4EArchitecture.create(enc, gen), variables)
    with pytest.raises(bundle.BundleError, match="holds a 'e4e' bundle, but a 'restyle' bundle is needed"):
        restyle.load_restyle(str(e4e_dir))
    assert restyle_bundle.read_architecture(path).iterations == toy.iterations == 3


# ----------------------------------------------------------------------------------- models
def test_resnet34_backbone_layout():
    specs = basic_block_specs()
    assert len(specs) == 16 and [i for i, s in enumerate(specs) if s[2]] == [3, 7, 13]
    assert [w for w, _, _ in specs] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    out = jax.eval_shape(
        lambda x: ResNet34Backbone().init_with_output(jax.random.key(0), x)[0], jnp.zeros((1, 192, 256, 6))
    )
    assert out.shape == (1, 12, 16, 512)  # no max-pool: H/16


def test_progressive_stage_and_fused_blocks(toy):
    enc_vars = toy.variables["encoder"]
    x = jnp.concatenate([_images(toy), _images(toy, seed=1)], axis=-1)
    cfg = restyle_bundle.read_architecture(toy.source).encoder
    full = cfg.build().apply(enc_vars, x)
    np.testing.assert_allclose(toy.encoder.apply(enc_vars, x), full, atol=1e-5)  # fused (load default) = per block
    staged = cfg.build().apply(enc_vars, x, progressive_stage=1)
    np.testing.assert_array_equal(staged[:, :2], full[:, :2])
    np.testing.assert_array_equal(staged[:, 2:], np.broadcast_to(full[:, :1], staged[:, 2:].shape))


# ----------------------------------------------------------------------------------- inference
def test_iterations_follow_the_official_formula(toy):
    """codes_0 = E(x, avg image) + latent_avg, codes_t = E(x, frame(G(codes_{t-1}))) + codes_{t-1}."""
    v, x = toy.variables, _images(toy)
    latents, images = jax.jit(lambda v, x: restyle.restyle(toy, v, x, 3))(v, x)
    assert latents.shape == (3, 3, 6, 512) and images.shape == (3, 16, 16, 3)

    def render(codes):
        return toy.generator.apply(v["generator"], codes, input_is_latent=True, noise_mode="const")

    avg = resampling.adaptive_avg_pool2d(render(jnp.asarray(v["latent_avg"])[None]), (32, 32))
    np.testing.assert_allclose(restyle.average_image(toy, v), avg, atol=1e-6)
    y, prev = jnp.broadcast_to(avg, x.shape), jnp.asarray(v["latent_avg"])[None]
    for t in range(3):
        prev = toy.encoder.apply(v["encoder"], jnp.concatenate([x, y], -1)) + prev
        np.testing.assert_allclose(latents[t], prev, atol=1e-5, err_msg=f"iteration {t}")
        y = resampling.adaptive_avg_pool2d(render(prev), (32, 32))
    np.testing.assert_allclose(images, render(prev), atol=1e-5)


@pytest.mark.parametrize("domain", ["ffhq", "cars"])
def test_scan_and_unroll_agree(tmp_path, domain):
    model = restyle.load_restyle(str(make_restyle_bundle(tmp_path / "b", domain=domain)))
    v, x = restyle.with_average_image(model, model.variables), _images(model)
    assert v[restyle.AVERAGE_IMAGE].shape == (1, *model.input_hw, 3)
    scan = restyle.make_restyle_fn(model, loop="scan")(v, x)
    unroll = restyle.make_restyle_fn(model, loop="unroll")(v, x)
    inline = restyle.make_restyle_fn(model)(model.variables, x)  # the average image rendered in the call
    for other in (unroll, inline):
        np.testing.assert_allclose(other[0], scan[0], atol=1e-5)
        np.testing.assert_allclose(other[1], scan[1], atol=1e-5)
    assert scan[1].shape == ((3, 12, 16, 3) if domain == "cars" else (3, 16, 16, 3))  # cars: rows 2:14 of 16


def test_one_compiled_function_per_loop_form(toy):
    v, x = toy.variables, _images(toy)
    scan = str(jax.make_jaxpr(lambda v, x: restyle.restyle(toy, v, x, 4, loop="scan"))(v, x))
    unroll = str(jax.make_jaxpr(lambda v, x: restyle.restyle(toy, v, x, 4, loop="unroll"))(v, x))
    assert scan.count("scan[") == 1 and "length=3" in scan  # iterations 0..2 in the loop, the last after it
    assert "scan[" not in unroll


def test_iteration_counts_and_image_modes(toy):
    v, x = restyle.with_average_image(toy, toy.variables), _images(toy)
    full, images = restyle.make_restyle_fn(toy)(v, x)  # the bundle's default: 3 iterations
    assert full.shape[0] == toy.iterations == 3
    one, none = restyle.make_restyle_fn(toy, n_iters=1, images="none")(v, x)
    assert none is None and one.shape == (1, 3, 6, 512)
    np.testing.assert_allclose(one[0], full[0], atol=1e-5)
    lat8, u8 = restyle.make_restyle_fn(toy, images="uint8", out_hw=(8, 8))(v, jnp.asarray(_pixels(toy)))
    assert u8.dtype == jnp.uint8 and u8.shape == (3, 8, 8, 3) and lat8.shape == full.shape
    for bad, match in [(dict(n_iters=0), "n_iters"), (dict(loop="while"), "loop"), (dict(images="png"), "images")]:
        with pytest.raises(ValueError, match=match):
            restyle.make_restyle_fn(toy, **bad)


def test_its_generator_renders_its_latents(toy):
    """synthesize / edit read a restyle bundle's generator (render.generator_of_bundle): the last latents render
    to the last reconstruction."""
    cfg, gen_vars = render.generator_of_bundle(toy.source)
    assert cfg == toy.gen_config
    latents, images = restyle.make_restyle_fn(toy)(toy.variables, _images(toy))
    rendered = np.concatenate(list(render.iter_synthesize(cfg, gen_vars, np.asarray(latents[-1]), batch_size=4)))
    np.testing.assert_allclose(rendered, images, atol=1e-4)


def _pixels(model):
    return np.random.default_rng(0).integers(0, 256, (3, *model.input_hw, 3), dtype=np.uint8)


SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from pathlib import Path
    assert jax.device_count() == 2
    from e4e_jax.inference import restyle
    from e4e_jax.runtime import sharding
    from tests.test_restyle import make_restyle_bundle

    model = restyle.load_restyle(str(make_restyle_bundle(Path({tmp!r}) / "b")))
    v = restyle.with_average_image(model, model.variables)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    mesh = sharding.data_mesh(jax.devices())
    lat2, img2 = restyle.make_restyle_fn(model, mesh)(sharding.replicate(v, mesh), sharding.shard_batch(x, mesh))
    lat1, img1 = restyle.make_restyle_fn(model)(v, x)
    assert lat2.shape == (3, 4, 6, 512) and img2.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(lat2), np.asarray(lat1), atol=1e-4)
    np.testing.assert_allclose(np.asarray(img2), np.asarray(img1), atol=1e-4)
    print("OK")
""")


def test_sharded_iterations_match_single_device(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    script = SCRIPT.format(root=str(ROOT), tmp=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
