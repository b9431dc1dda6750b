"""Parity of the Flax StyleGAN2 with a PyTorch reference saved as a rosinality `.pt` and converted
by the real converter CLI; plus jit caching, converter errors and the `synthesize` command."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config  # noqa: E402
from e4e_jax.storage import bundle  # noqa: E402
from tests.parity import assert_close  # noqa: E402
from tests.refs.rosinality_stylegan2 import Generator as TorchGenerator  # noqa: E402
from tests.refs.rosinality_stylegan2 import channel_table  # noqa: E402
from tools.convert_weights.__main__ import main as convert_main  # noqa: E402

STYLE_DIM = 64
BATCH = 2


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


# (size, channel multiplier, channel divisor): the divisor shrinks the official table for CPU speed;
# one case keeps the full official widths and style_dim 512.
CASES = [(32, 1, 8, STYLE_DIM), (32, 2, 8, STYLE_DIM), (64, 1, 8, STYLE_DIM), (64, 2, 1, 512)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"size{c[0]}-cm{c[1]}-div{c[2]}-d{c[3]}")
def converted(request, tmp_path_factory):
    size, cm, div, style_dim = request.param
    torch.manual_seed(size * 10 + cm)
    channels = {r: max(c // div, 4) for r, c in channel_table(cm).items()}
    tg = TorchGenerator(size, style_dim=style_dim, n_mlp=3, channel_multiplier=cm, channels=channels).randomize_(
        seed=size + cm
    )
    tg.eval()
    latent_avg = torch.randn(style_dim) * 0.5
    tmp = tmp_path_factory.mktemp(f"sg2_{size}_{cm}")
    src = tmp / "stylegan2.pt"
    torch.save({"g_ema": tg.state_dict(), "latent_avg": latent_avg, "args": {"size": size}}, src)
    out = tmp / "bundle"
    assert convert_main(["stylegan2", str(src), "--out", str(out)]) == 0
    config, variables = bundle.load(out, "stylegan2")
    cfg = StyleGAN2Config.from_dict(config["architecture"])
    assert cfg.size == size and cfg.n_latent == tg.n_latent
    return tg, latent_avg, cfg, variables, out


def _gen(cfg, path="grouped", upsample="transpose"):
    return Generator(cfg, modulation=path, precision="highest", upsample=upsample)


@pytest.mark.parametrize("path", ["grouped", "activation"])
def test_z_input_truncation_const_noise(converted, path):
    tg, latent_avg, cfg, variables, _ = converted
    z = torch.randn(BATCH, cfg.style_dim)
    with torch.no_grad():
        ref, _ = tg([z], randomize_noise=False, truncation=0.7, truncation_latent=latent_avg)
    ours = _gen(cfg, path).apply(variables, jnp.asarray(z.numpy()), truncation=0.7, noise_mode="const")
    assert_close(ours, nhwc(ref), f"z/trunc/{path}")


@pytest.mark.parametrize("path", ["grouped", "activation"])
def test_w_and_wplus_input_subpixel_upsampling(converted, path):
    tg, _, cfg, variables, _ = converted
    gen = _gen(cfg, path, upsample="subpixel")
    wplus = torch.randn(BATCH, cfg.n_latent, cfg.style_dim)
    w = torch.randn(BATCH, cfg.style_dim)
    with torch.no_grad():
        ref_plus, _ = tg([wplus], input_is_latent=True, randomize_noise=False)
        ref_w, _ = tg([w], input_is_latent=True, randomize_noise=False)
    assert_close(gen.apply(variables, jnp.asarray(wplus.numpy()), input_is_latent=True), nhwc(ref_plus), "W+")
    assert_close(gen.apply(variables, jnp.asarray(w.numpy()), input_is_latent=True), nhwc(ref_w), "W")


def test_style_mixing_and_no_noise(converted):
    tg, _, cfg, variables, _ = converted
    z1, z2 = torch.randn(BATCH, cfg.style_dim), torch.randn(BATCH, cfg.style_dim)
    noise0 = [torch.zeros(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(tg.num_layers)]
    with torch.no_grad():
        ref_mix, lat = tg([z1, z2], inject_index=3, randomize_noise=False, return_latents=True)
        ref_none, _ = tg([z1], noise=noise0)
    gen = _gen(cfg)
    ours_mix, ours_lat = gen.apply(
        variables, (jnp.asarray(z1.numpy()), jnp.asarray(z2.numpy())), inject_index=3, return_latents=True
    )
    assert_close(ours_lat, lat.numpy(), "mixed latents")
    assert_close(ours_mix, nhwc(ref_mix), "mixing")
    assert_close(gen.apply(variables, jnp.asarray(z1.numpy()), noise_mode="none"), nhwc(ref_none), "noise none")


def test_random_noise_is_seeded_and_differs_from_const(converted):
    _, _, cfg, variables, _ = converted
    gen = _gen(cfg)
    ws = jax.random.normal(jax.random.key(1), (BATCH, cfg.n_latent, cfg.style_dim))
    a = gen.apply(variables, ws, input_is_latent=True, noise_mode="random", rngs={"noise": jax.random.key(5)})
    b = gen.apply(variables, ws, input_is_latent=True, noise_mode="random", rngs={"noise": jax.random.key(5)})
    c = gen.apply(variables, ws, input_is_latent=True, noise_mode="const")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).max()) > 1e-3


@pytest.mark.parametrize(
    "path,upsample", [("activation", "transpose"), ("grouped", "subpixel"), ("activation", "subpixel")]
)
def test_modulation_and_upsampling_paths_agree(converted, path, upsample):
    _, _, cfg, variables, _ = converted
    ws = jax.random.normal(jax.random.key(2), (BATCH, cfg.n_latent, cfg.style_dim))
    reference = _gen(cfg, "grouped", "transpose").apply(variables, ws, input_is_latent=True)
    other = _gen(cfg, path, upsample).apply(variables, ws, input_is_latent=True)
    assert_close(other, reference, f"{path}/{upsample} vs grouped/transpose")


def test_jit_compiles_once_per_shape(converted):
    _, _, cfg, variables, _ = converted
    gen = _gen(cfg)
    traces = []

    @jax.jit
    def synth(v, ws):
        traces.append(ws.shape)  # Runs only while tracing.
        return gen.apply(v, ws, input_is_latent=True)

    ws = jax.random.normal(jax.random.key(3), (BATCH, cfg.n_latent, cfg.style_dim))
    synth(variables, ws).block_until_ready()
    synth(variables, ws + 1.0).block_until_ready()
    assert len(traces) == 1
    synth(variables, ws[:1]).block_until_ready()
    synth(variables, ws[1:]).block_until_ready()
    assert len(traces) == 2  # One more compile for the new batch size, none for the repeat.


def test_synthesize_cli_writes_npy_and_png(converted, tmp_path):
    from e4e_jax.cli import main as cli_main

    _, _, cfg, variables, bundle_dir = converted
    if cfg.size != 32:
        pytest.skip("one size is enough for the CLI")
    ws = np.random.default_rng(0).standard_normal((3, cfg.n_latent, cfg.style_dim)).astype(np.float32)
    np.save(tmp_path / "w.npy", ws)
    rc = cli_main(
        [
            "synthesize",
            "--model",
            str(bundle_dir),
            "--latents",
            str(tmp_path / "w.npy"),
            "--output",
            str(tmp_path / "imgs.npy"),
            "--png",
            str(tmp_path / "png"),
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    imgs = np.load(tmp_path / "imgs.npy")
    assert imgs.shape == (3, cfg.size, cfg.size, 3) and imgs.dtype == np.float32
    direct = Generator(cfg).apply(variables, jnp.asarray(ws), input_is_latent=True)
    np.testing.assert_allclose(imgs, np.asarray(direct), atol=1e-4 * max(1, np.abs(direct).max()))
    from e4e_jax.storage import outdir

    # the folder holds the three images and synthesize's ownership mark (issue 30: --overwrite touches only its own)
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == [outdir.OWNER_NAME, "000000.png", "000001.png", "000002.png"]
    bad = tmp_path / "bad.npy"
    np.save(bad, ws[:, :3])
    assert (
        cli_main(["synthesize", "--model", str(bundle_dir), "--latents", str(bad), "--output", str(tmp_path / "x.npy")])
        == 2
    )
    assert not (tmp_path / "x.npy").exists()


# ----------------------------------------------------------------------------- converter errors


@pytest.fixture(scope="module")
def small_torch_gen():
    torch.manual_seed(0)
    channels = {r: 8 for r in channel_table(1)}
    return TorchGenerator(16, style_dim=16, n_mlp=2, channels=channels).randomize_()


def test_missing_latent_avg_is_computed(small_torch_gen, tmp_path, capsys):
    src = tmp_path / "g.pt"
    torch.save({"g_ema": small_torch_gen.state_dict()}, src)
    assert convert_main(["stylegan2", str(src), "--out", str(tmp_path / "b"), "--option", "w_avg_samples=20000"]) == 0
    config, variables = bundle.load(tmp_path / "b", "stylegan2")
    assert "computed" in config["w_avg_source"]
    with torch.no_grad():
        ref = small_torch_gen.style(torch.randn(200_000, 16, generator=torch.Generator().manual_seed(1))).mean(0)
    w = variables["buffers"]["w_avg"]
    # Two Monte-Carlo means of the same distribution: agree to a few standard errors.
    spread = small_torch_gen.style(torch.randn(2000, 16)).std(0).detach().numpy()
    assert np.all(np.abs(w - ref.numpy()) < 5 * spread / np.sqrt(20000) + 1e-6)


def test_e4e_checkpoint_given_to_stylegan2_is_a_clear_error(small_torch_gen, tmp_path, capsys):
    src = tmp_path / "e4e_ffhq_encode.pt"
    sd = {f"decoder.{k}": v for k, v in small_torch_gen.state_dict().items()}
    sd["encoder.input_layer.0.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save({"state_dict": sd, "opts": {"stylegan_size": 16}}, src)
    assert convert_main(["stylegan2", str(src), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "e4e" in err and "convert_weights e4e" in err
    assert not (tmp_path / "b").exists()


def test_missing_and_unexpected_keys_are_named(small_torch_gen, tmp_path, capsys):
    sd = dict(small_torch_gen.state_dict())
    del sd["convs.1.noise.weight"]
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, tmp_path / "a.pt")
    assert convert_main(["stylegan2", str(tmp_path / "a.pt"), "--out", str(tmp_path / "a")]) == 2
    assert "convs.1.noise.weight" in capsys.readouterr().err
    sd = dict(small_torch_gen.state_dict())
    sd["convs.1.extra_thing"] = torch.zeros(3)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, tmp_path / "b.pt")
    assert convert_main(["stylegan2", str(tmp_path / "b.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "convs.1.extra_thing" in capsys.readouterr().err


def test_bundle_of_wrong_kind_is_refused(converted, tmp_path):
    *_, bundle_dir = converted
    with pytest.raises(bundle.BundleError, match="'stylegan2' bundle, but a 'e4e' bundle"):
        bundle.load(bundle_dir, "e4e")
