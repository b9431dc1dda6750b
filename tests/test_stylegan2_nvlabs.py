"""Parity of our StyleGAN2 generator with NVlabs stylegan2-ada-pytorch network pickles.

A PyTorch reference of the official generator (tests/refs/nvlabs_stylegan2.py) with random, non-default
weights is written as an official network pickle (tests/refs/nvlabs_pickle.py), converted by the real
CLI (`python -m tools.convert_weights stylegan2 FILE.pkl --out DIR`, run in-process), loaded back as a
bundle, and compared with the reference at the project tolerance.
"""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config
from e4e_jax.storage import bundle
from e4e_jax.storage.torchfile import load_checkpoint
from tests.refs import nvlabs_pickle, nvlabs_stylegan2
from tools.convert_weights.__main__ import main as convert_main
from tools.convert_weights.stylegan2_nvlabs import convert_nvlabs

BATCH = 3

CASES = {
    # res 32, 2-layer mapping, no clamp.
    "r32_map2": dict(
        z_dim=32,
        w_dim=32,
        img_resolution=32,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=1024, channel_max=64),
    ),
    # res 64, 8-layer mapping, ADA's conv_clamp=256 and fp16 metadata, z_dim != w_dim.
    "r64_map8_clamp256": dict(
        z_dim=48,
        w_dim=32,
        img_resolution=64,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=dict(channel_base=2048, channel_max=64, num_fp16_res=4, conv_clamp=256),
    ),
    # A clamp small enough to bite in every layer.
    "r32_clamp0.5": dict(
        z_dim=32,
        w_dim=32,
        img_resolution=32,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=1024, channel_max=64, conv_clamp=0.5),
    ),
}


def _tol(ref: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


def _assert_close(ours, ref, what):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = float(np.abs(ours - ref).max())
    print(f"{what}: max|ours-ref| = {err:.3g} (max|ref| = {np.abs(ref).max():.3g})")
    assert err <= _tol(ref), f"{what}: max error {err} > {_tol(ref)}"


def _perturbed_copy(g):
    """A different network for the pickle's 'G' slot (the converter must read G_ema)."""
    g = copy.deepcopy(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p))
    return g


def _build(case: str, seed: int = 0):
    kw = copy.deepcopy(CASES[case])
    return nvlabs_pickle.make_generator(seed=seed, c_dim=0, img_channels=3, **kw)


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
    """(reference G_ema, our Generator, variables) for one case, through pickle -> CLI -> bundle."""
    g_ema = _build(request.param)
    tmp = tmp_path_factory.mktemp(request.param)
    pkl = nvlabs_pickle.save_network_pickle(
        tmp / "network-snapshot-000000.pkl", _perturbed_copy(g_ema), g_ema, D=nvlabs_pickle.Discriminator()
    )
    assert convert_main(["stylegan2", str(pkl), "--out", str(tmp / "bundle")]) == 0
    config, variables = bundle.load(tmp / "bundle", "stylegan2")
    gen = Generator(StyleGAN2Config(**config["architecture"]), precision="highest")
    return request.param, g_ema, gen, variables


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


def test_architecture(converted):
    case, g_ema, gen, variables = converted
    cfg = gen.config
    kw = CASES[case]
    assert cfg.size == kw["img_resolution"] and cfg.style_dim == kw["w_dim"]
    assert cfg.n_mlp == kw["mapping_kwargs"]["num_layers"]
    assert cfg.conv_clamp == kw["synthesis_kwargs"].get("conv_clamp")
    assert cfg.mapping_in_dim == kw["z_dim"]
    assert cfg.n_latent == g_ema.num_ws
    np.testing.assert_array_equal(variables["buffers"]["w_avg"], g_ema.mapping.w_avg.numpy())


def test_mapping(converted):
    case, g_ema, gen, variables = converted
    z = torch.randn(BATCH, g_ema.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = g_ema.mapping(z, None)[:, 0].numpy()
    _assert_close(gen.apply(variables, jnp.asarray(z.numpy()), method=Generator.map), ref, f"{case} mapping")


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_z_to_image(converted, psi):
    case, g_ema, gen, variables = converted
    z = torch.randn(BATCH, g_ema.z_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = _nhwc(g_ema(z, None, truncation_psi=psi, noise_mode="const"))
    ours = gen.apply(variables, jnp.asarray(z.numpy()), truncation=psi, noise_mode="const")
    _assert_close(ours, ref, f"{case} z psi={psi}")


@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_wplus_to_image(converted, noise_mode):
    case, g_ema, gen, variables = converted
    ws = torch.randn(BATCH, g_ema.num_ws, g_ema.w_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = _nhwc(g_ema.synthesis(ws, noise_mode=noise_mode))
    ours = gen.apply(variables, jnp.asarray(ws.numpy()), input_is_latent=True, noise_mode=noise_mode)
    _assert_close(ours, ref, f"{case} W+ noise={noise_mode}")


def test_small_clamp_is_exercised():
    """The 0.5 clamp must change the reference's output, or that parity case would prove nothing."""
    g = _build("r32_clamp0.5")
    unclamped = copy.deepcopy(g)
    for m in unclamped.modules():
        if hasattr(m, "conv_clamp"):
            m.conv_clamp = None
    ws = torch.randn(BATCH, g.num_ws, g.w_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        diff = (g.synthesis(ws, noise_mode="const") - unclamped.synthesis(ws, noise_mode="const")).abs().max()
    assert diff > 0.1


# ----------------------------------------------------------------------------- clear errors


def _save(tmp_path, g_ema, **kw):
    return nvlabs_pickle.save_network_pickle(tmp_path / "net.pkl", g_ema, g_ema, **kw)


def _convert(path):
    return convert_nvlabs(load_checkpoint(path), path)


def test_error_resnet_architecture(tmp_path, capsys):
    kw = copy.deepcopy(CASES["r32_map2"])
    kw["synthesis_kwargs"]["architecture"] = "resnet"
    pkl = _save(tmp_path, nvlabs_pickle.make_generator(c_dim=0, img_channels=3, **kw))
    with pytest.raises(ValueError, match=r"net\.pkl.*'resnet'.*not supported"):
        _convert(pkl)
    assert convert_main(["stylegan2", str(pkl), "--out", str(tmp_path / "out")]) == 2
    assert "resnet" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_error_missing_g_ema(tmp_path):
    pkl = tmp_path / "net.pkl"
    with open(pkl, "wb") as f:  # e.g. a D-only or hand-trimmed snapshot
        nvlabs_pickle._PersistentPickler(f).dump(
            {
                "G": _build("r32_map2"),
                "D": None,
                "augment_pipe": None,
                "training_set_kwargs": nvlabs_pickle.dnnlib.EasyDict(),
            }
        )
    with pytest.raises(KeyError, match=r"net\.pkl.*G_ema"):
        _convert(pkl)


def test_error_conditional(tmp_path):
    g = _build("r32_map2")
    g._init_kwargs["c_dim"] = 10  # as a conditional pickle would record it
    with pytest.raises(ValueError, match=r"net\.pkl.*c_dim=10"):
        _convert(_save(tmp_path, g))


@nvlabs_stylegan2.persistent_class
class SynthesisInput(torch.nn.Module):
    """Named like StyleGAN3's Fourier-feature input layer."""

    def __init__(self, w_dim=32, channels=8):
        super().__init__()
        self.affine = nvlabs_stylegan2.FullyConnectedLayer(w_dim, 4)
        self.register_buffer("freqs", torch.randn(channels, 2))


def test_error_stylegan3(tmp_path):
    g = _build("r32_map2")
    g.synthesis.input = SynthesisInput()
    with pytest.raises(ValueError, match=r"net\.pkl.*StyleGAN3"):
        _convert(_save(tmp_path, g))


def test_error_unexpected_key(tmp_path):
    g = _build("r32_map2")
    g.synthesis.b8.conv1.register_buffer("extra", torch.zeros(2))
    with pytest.raises(KeyError, match=r"net\.pkl.*synthesis\.b8\.conv1\.extra"):
        _convert(_save(tmp_path, g))


def test_error_missing_key(tmp_path):
    g = _build("r32_map2")
    g.synthesis.b16.torgb.register_parameter("bias", None)
    with pytest.raises(KeyError, match=r"net\.pkl.*synthesis\.b16\.torgb\.bias"):
        _convert(_save(tmp_path, g))


def test_error_resample_filter(tmp_path):
    g = _build("r32_map2")
    with torch.no_grad():
        g.synthesis.b8.conv0.resample_filter.copy_(nvlabs_stylegan2.setup_filter([1, 1]).repeat(2, 2) / 4)
    with pytest.raises(ValueError, match=r"net\.pkl.*b8\.conv0\.resample_filter"):
        _convert(_save(tmp_path, g))


def test_error_not_rgb(tmp_path):
    g = _build("r32_map2")
    g._init_kwargs["img_channels"] = 1
    with pytest.raises(ValueError, match=r"net\.pkl.*img_channels=1"):
        _convert(_save(tmp_path, g))
