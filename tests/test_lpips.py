"""LPIPS (alex / vgg) against the PyTorch reference: real v0.1 heads, random torchvision-layout backbones."""

import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.losses import lpips_loss
from e4e_jax.models.lpips import LPIPS
from e4e_jax.storage import bundle
from e4e_jax.storage.torchfile import load_checkpoint
from tests.parity import tolerance as _tol  # noqa: E402
from tests.refs.perceptual_refs import LPIPSRef, TorchvisionFeatures, e4e_lpips_loss, randomize_
from tools.convert_weights import lpips as lpips_conv
from tools.convert_weights.__main__ import main as convert_main

DATA = Path(__file__).parent / "data" / "lpips_v0.1"
SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def _nhwc(a):
    return jnp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(0)
    x = rs.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    y = np.clip(x + rs.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    return x, y


@pytest.fixture(scope="module", params=["alex", "vgg"])
def setup(request, tmp_path_factory):
    """(net, torch reference, converted variables, backbone file) for one net."""
    net = request.param
    tmp = tmp_path_factory.mktemp(f"lpips_{net}")
    tv = randomize_(TorchvisionFeatures(net), seed=1)
    torch.save(tv.state_dict(), tmp / f"{net}_backbone.pth")
    ref = LPIPSRef(net, tv.features)
    heads = torch.load(DATA / f"{net}.pth", map_location="cpu", weights_only=True)
    for k in range(5):
        getattr(ref, f"lin{k}").model[1].weight.data.copy_(heads[f"lin{k}.model.1.weight"])
    ref.eval()
    arch, variables, extra = lpips_conv.convert([DATA / f"{net}.pth", tmp / f"{net}_backbone.pth"])
    assert arch == {"net": net, "version": "0.1"} and extra["bundle_kind"] == "lpips"
    return net, ref, variables, tmp / f"{net}_backbone.pth"


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_real_head_files_load_through_safe_reader(net):
    path = DATA / f"{net}.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[net]
    assert not path.read_bytes().startswith(b"PK")  # legacy (non-zip) pickle, as shipped
    sd = load_checkpoint(path)
    assert sorted(sd) == [f"lin{k}.model.1.weight" for k in range(5)]
    for k, c in enumerate(CHANNELS[net]):
        w = sd[f"lin{k}.model.1.weight"]
        assert isinstance(w, np.ndarray) and w.dtype == np.float32 and w.shape == (1, c, 1, 1)
        assert (w >= 0).all() and w.max() > 0.1  # trained heads are clamped non-negative
    ref = torch.load(path, map_location="cpu", weights_only=True)
    for k in sd:
        np.testing.assert_array_equal(sd[k], ref[k].numpy())


def test_parity_with_reference(setup, images):
    net, ref, variables, _ = setup
    x, y = images
    with torch.no_grad():
        ref_d = ref(torch.from_numpy(x), torch.from_numpy(y)).numpy().reshape(-1)
        ref_layers = np.stack([r.numpy().reshape(-1) for r in ref(torch.from_numpy(x), torch.from_numpy(y), True)], 1)
    model = LPIPS(net, precision="highest")
    d = np.asarray(jax.jit(model.apply)(variables, _nhwc(x), _nhwc(y)))
    layers = np.asarray(model.apply(variables, _nhwc(x), _nhwc(y), per_layer=True))
    assert d.shape == (2,) and layers.shape == (2, 5)
    assert np.abs(d - ref_d).max() <= _tol(ref_d), (d, ref_d)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4)  # distances are O(0.01): relative check too
    assert np.abs(layers - ref_layers).max() <= _tol(ref_layers)
    assert ref_d.min() > 1e-3  # a meaningful comparison, not 0 vs 0


def test_e4e_loss_and_gradient_match_reference(setup, images):
    net, ref, variables, _ = setup
    x, y = images
    xt = torch.from_numpy(x).requires_grad_(True)
    ref_loss = e4e_lpips_loss(ref, xt, torch.from_numpy(y))
    ref_loss.backward()
    ref_grad = xt.grad.numpy().transpose(0, 2, 3, 1)
    loss, grad = jax.jit(jax.value_and_grad(lambda a, b: lpips_loss(variables, a, b, net, precision="highest")))(
        _nhwc(x), _nhwc(y)
    )
    ref_loss = ref_loss.item()
    assert abs(float(loss) - ref_loss) <= _tol(ref_loss)
    grad = np.asarray(grad)
    assert np.isfinite(grad).all()
    scale = float(np.abs(ref_grad).max())
    assert scale > 0
    assert np.abs(grad - ref_grad).max() <= 1e-3 * scale, (np.abs(grad - ref_grad).max(), scale)


def test_identity_zero_symmetry_and_small_perturbation_scaling(setup, images):
    """d(x, x) = 0 (to rounding); d symmetric; for tiny perturbations t·δ (no ReLU flips sign) d grows as t²."""
    net, _, variables, _ = setup
    x, _ = images
    model = LPIPS(net, precision="highest")
    f = jax.jit(model.apply)
    xa = _nhwc(x)
    assert np.abs(np.asarray(f(variables, xa, xa))).max() < 1e-12  # XLA may round the two halves differently
    delta = jnp.asarray(np.random.RandomState(5).normal(size=xa.shape).astype(np.float32))
    ds = [np.asarray(f(variables, xa, xa + t * delta)) for t in (1e-3, 2e-3, 4e-3)]
    np.testing.assert_allclose(np.asarray(f(variables, xa + 1e-3 * delta, xa)), ds[0], rtol=1e-4)
    assert (ds[0] > 0).all() and (ds[0] < ds[1]).all() and (ds[1] < ds[2]).all()
    np.testing.assert_allclose(ds[1] / ds[0], 4.0, rtol=0.05)
    np.testing.assert_allclose(ds[2] / ds[1], 4.0, rtol=0.05)


def _e4e_module_state(net, tv, heads):
    """e4e's criteria.lpips.LPIPS().state_dict(): net.mean/std, net.layers.{n}.*, lin.{k}.1.weight."""
    sd = {
        "net.mean": torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None],
        "net.std": torch.tensor([0.458, 0.448, 0.450])[None, :, None, None],
    }
    sd.update(
        {f"net.layers.{k[len('features.') :]}": v for k, v in tv.state_dict().items() if k.startswith("features.")}
    )
    sd.update({f"lin.{k}.1.weight": heads[f"lin{k}.model.1.weight"] for k in range(5)})
    return sd


def test_other_layouts_convert_identically(setup, tmp_path):
    net, ref, variables, backbone = setup
    heads = torch.load(DATA / f"{net}.pth", map_location="cpu", weights_only=True)
    tv = TorchvisionFeatures(net)
    tv.load_state_dict(torch.load(backbone, weights_only=True))
    # lpips package's full LPIPS module state dict (scaling_layer, net.slice*, lin*) as one file.
    torch.save(ref.state_dict(), tmp_path / "lpips_module.pth")
    assert any(k.startswith("net.slice2.") for k in ref.state_dict())
    # e4e's LPIPS module; and e4e's LinLayers (keys `{k}.1.weight`) + a bare `features` state dict.
    torch.save(_e4e_module_state(net, tv, heads), tmp_path / "e4e_module.pth")
    torch.save({f"{k}.1.weight": heads[f"lin{k}.model.1.weight"] for k in range(5)}, tmp_path / "linlayers.pth")
    torch.save(tv.features.state_dict(), tmp_path / "features.pth")
    for srcs in (
        [tmp_path / "lpips_module.pth"],
        [tmp_path / "e4e_module.pth"],
        [tmp_path / "features.pth", tmp_path / "linlayers.pth"],
    ):
        arch, other, _ = lpips_conv.convert(srcs)
        assert arch["net"] == net
        jax.tree_util.tree_map(np.testing.assert_array_equal, other, variables)


def test_converter_errors(setup, tmp_path):
    net, _, _, backbone = setup
    head = DATA / f"{net}.pth"
    with pytest.raises(KeyError, match="no backbone weights.*torchvision"):
        lpips_conv.convert([head])
    with pytest.raises(KeyError, match="no LPIPS heads"):
        lpips_conv.convert([backbone])
    with pytest.raises(ValueError, match="duplicates"):
        lpips_conv.convert([head, backbone, head])
    other = "vgg" if net == "alex" else "alex"
    with pytest.raises(ValueError, match="cannot tell whether"):
        lpips_conv.convert([DATA / f"{other}.pth", backbone])
    with pytest.raises(ValueError, match="has shape"):
        lpips_conv.convert([DATA / f"{other}.pth", backbone], net=net)
    sd = torch.load(backbone, weights_only=True)
    sd["features.99.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(KeyError, match="features.99.weight"):
        lpips_conv.convert([head, tmp_path / "extra.pth"], net=net)
    sd.pop("features.99.weight")
    sd["optimizer_state"] = torch.zeros(1)
    torch.save(sd, tmp_path / "unknown.pth")
    with pytest.raises(KeyError, match="optimizer_state"):
        lpips_conv.convert([head, tmp_path / "unknown.pth"])
    torch.save({"scaling_layer.shift": torch.zeros(1, 3, 1, 1)}, tmp_path / "v00.pth")
    with pytest.raises(ValueError, match="scaling_layer.shift.*v0.1"):
        lpips_conv.convert([head, backbone, tmp_path / "v00.pth"])


def test_cli_bundle_roundtrip(setup, images, tmp_path):
    net, ref, _, backbone = setup
    out = tmp_path / "bundle"
    assert convert_main(["lpips", str(backbone), str(DATA / f"{net}.pth"), "--out", str(out)]) == 0
    config, variables = bundle.load(out, "lpips")
    assert config["architecture"] == {"net": net, "version": "0.1"}
    x, y = images
    with torch.no_grad():
        ref_d = ref(torch.from_numpy(x), torch.from_numpy(y)).numpy().reshape(-1)
    d = np.asarray(
        LPIPS(**{"net": config["architecture"]["net"]}, precision="highest").apply(variables, _nhwc(x), _nhwc(y))
    )
    assert np.abs(d - ref_d).max() <= _tol(ref_d)
