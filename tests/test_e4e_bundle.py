"""The e4e bundle schema (e4e_jax/storage/e4e_bundle.py), the domain geometry (e4e_jax/domains.py) and the one
latent_avg estimate (e4e_jax/models/latent_avg.py) that converter and trainer share."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax import domains
from e4e_jax.models import latent_avg
from e4e_jax.models.encoder import Encoder4Editing
from e4e_jax.models.encoder_types import EncoderConfig
from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config
from e4e_jax.storage import bundle, e4e_bundle
from e4e_jax.storage.e4e_bundle import E4EArchitecture

GEN = StyleGAN2Config(size=8, channels=(16, 16), n_mlp=2)  # 4 codes
TOY = dict(widths=(8, 8, 16, 16), units=(1, 1, 1, 1), style_channels=16)
HW = (32, 32)


def test_domain_of_official_dataset_types():
    assert [
        domains.domain_of(t)
        for t in ("ffhq_encode", "celeba_encode", "cars_encode", "horse_encode", "church_encode", "cats_encode")
    ] == ["ffhq", "ffhq", "cars", "horse", "church", "cats"]
    assert domains.domain_of("tiny_synthetic") is None and domains.domain_of(None) is None


def test_cars_geometry():
    """Official cars: 192x256 encoder input, generator output rows 64:448 of 512 (32:224 of 256)."""
    assert domains.input_hw("cars") == (192, 256) and domains.input_hw("ffhq") == (256, 256)
    assert domains.cars_rows(512) == (64, 448) and domains.cars_rows(256) == (32, 224)
    assert domains.cars_rows(1024) == (128, 896) and domains.cars_rows(16) == (2, 14)
    assert domains.centred_rows(256, 192) == (32, 224)


def _variables(mode="e4e"):
    enc_cfg = EncoderConfig(mode=mode, n_styles=GEN.n_latent, input_size=HW, **TOY)
    enc = enc_cfg.build()
    enc_vars = jax.jit(enc.init)(jax.random.key(1), jnp.zeros((1, *HW, 3)))
    gen_vars = jax.jit(Generator(GEN).init)(jax.random.key(0), jnp.zeros((1, GEN.mapping_in_dim)))
    la = np.asarray(jax.random.normal(jax.random.key(2), (GEN.n_latent, 512)), np.float32)
    return enc_cfg, {"encoder": enc_vars, "generator": gen_vars, "latent_avg": la}


def test_architecture_round_trip_and_domain():
    enc_cfg, _ = _variables()
    arch = E4EArchitecture.create(enc_cfg, GEN, "cars_encode", opts={"stylegan_size": 8})
    assert arch.domain == "cars"
    d = arch.to_dict()
    assert d["domain"] == "cars" and d["dataset_type"] == "cars_encode" and d["opts"] == {"stylegan_size": 8}
    assert E4EArchitecture.from_dict(d) == arch
    plain = E4EArchitecture.create(enc_cfg, GEN).to_dict()
    assert "domain" not in plain and "dataset_type" not in plain
    with pytest.raises(ValueError, match="the encoder has 3 styles but the generator"):
        E4EArchitecture.create(EncoderConfig(mode="e4e", n_styles=3), GEN)


def test_save_load(tmp_path):
    enc_cfg, variables = _variables()
    arch = E4EArchitecture.create(enc_cfg, GEN, "ffhq_encode")
    path = e4e_bundle.save(tmp_path / "b", arch, variables, extra={"note": "test"})
    got, got_vars, config = e4e_bundle.load(path)
    assert got == arch and config["note"] == "test" and config["kind"] == "e4e"
    np.testing.assert_array_equal(got_vars["latent_avg"], variables["latent_avg"])
    stylegan2 = bundle.save(tmp_path / "g", "stylegan2", GEN.to_dict(), variables["generator"])
    with pytest.raises(bundle.BundleError, match="'stylegan2' bundle, but a 'e4e' bundle is needed"):
        e4e_bundle.load(stylegan2)


def test_old_bundles_load(tmp_path):
    """An encoder dict of the first format (only 'mode', no input_nc / encoder_type) and no 'opts'."""
    _, variables = _variables("psp")
    old = {
        "encoder": {
            "mode": "psp",
            "n_styles": GEN.n_latent,
            "num_layers": 50,
            "backbone_mode": "ir_se",
            "input_size": list(HW),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in TOY.items()},
        },
        "generator": GEN.to_dict(),
        "domain": "ffhq",
    }
    bundle.save(tmp_path / "old", "e4e", old, variables)
    arch, _, _ = e4e_bundle.load(tmp_path / "old")
    assert arch.encoder == EncoderConfig(mode="psp", n_styles=GEN.n_latent, input_size=HW, **TOY)
    assert arch.domain == "ffhq" and arch.dataset_type is None and arch.opts == {}
    module = arch.encoder.build()
    assert isinstance(module, Encoder4Editing) and module.mode == "psp"


def test_one_latent_avg_estimate():
    """mean_w draws chunk by chunk from splits of key(seed); the trainer's latent_avg is the same estimate."""
    gen = Generator(GEN)
    gen_vars = jax.jit(gen.init)(jax.random.key(0), jnp.zeros((1, GEN.mapping_in_dim)))
    got = latent_avg.mean_w(GEN, gen_vars, n_samples=300, seed=3, chunk=128)
    key, parts = jax.random.key(3), []
    for n in (128, 128, 44):
        key, sub = jax.random.split(key)
        parts.append(gen.apply(gen_vars, jax.random.normal(sub, (n, GEN.mapping_in_dim)), method=Generator.map))
    np.testing.assert_allclose(got, np.concatenate(parts).mean(0), rtol=1e-5, atol=1e-6)
    assert got.shape == (GEN.style_dim,) and got.dtype == np.float32
    zero_w_avg = {**gen_vars, "buffers": {**gen_vars["buffers"], "w_avg": jnp.zeros(GEN.style_dim)}}
    np.testing.assert_array_equal(
        latent_avg.of_generator(GEN, zero_w_avg, GEN.n_latent),
        latent_avg.per_layer(latent_avg.mean_w(GEN, zero_w_avg), GEN.n_latent),
    )
    stored = {**gen_vars, "buffers": {**gen_vars["buffers"], "w_avg": jnp.full(GEN.style_dim, 0.5)}}
    np.testing.assert_array_equal(latent_avg.of_generator(GEN, stored, 2), np.full((2, GEN.style_dim), 0.5, np.float32))
