"""LPIPS converter against the real `lpips` package (PyPI 0.1.4): the package's own network, state dict and
distances, for alex and vgg.

`lpips.LPIPS(net, pnet_rand=True)` builds the package's module with the v0.1 heads it ships (real trained
weights, inside the wheel) on a backbone with the package's random initialisation (pnet_rand: no
ImageNet backbone is downloaded). Its `state_dict()` is saved with torch.save as a user would, converted
by the real CLI, and the bundle's distances and per-layer terms are compared with the package's forward
at the parity tolerance (tests/parity.py).

lpips imports torchvision, whose PyPI builds need a different torch than the CPU torch 2.13 installed here:
the package runs on the stand-in of tests/torchvision_standin.py (torchvision's module layout, written from
its published architecture), installed in sys.modules for this module's tests only.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.models.lpips import CHANNELS, LPIPS
from e4e_jax.storage import bundle
from tests.parity import assert_close, max_err
from tests.torchvision_standin import standin_torchvision
from tools.convert_weights.__main__ import main as convert_main

BATCH, SIDE = 4, 64  # image pairs (NCHW, [-1, 1]); 64x64 is enough for AlexNet's 5 stages and VGG's
SEED = 0
NOISE = 0.3  # y = x + N(0, NOISE): distances well above 0


@pytest.fixture(scope="module")
def lpips_pkg():
    with standin_torchvision():
        yield pytest.importorskip("lpips")


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(SEED)
    x = rs.uniform(-1, 1, (BATCH, 3, SIDE, SIDE)).astype(np.float32)
    y = np.clip(x + rs.normal(0, NOISE, x.shape), -1, 1).astype(np.float32)
    return x, y


@pytest.fixture(scope="module", params=["alex", "vgg"])
def converted(request, lpips_pkg, tmp_path_factory):
    """(net, the package's LPIPS module, its saved state dict file, the converted bundle's variables)."""
    net = request.param
    torch.manual_seed(SEED)  # the package's own random backbone initialisation
    model = lpips_pkg.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    tmp = tmp_path_factory.mktemp(f"lpips_pkg_{net}")
    src = tmp / f"lpips_{net}.pth"
    torch.save(model.state_dict(), src)
    out = tmp / "bundle"
    assert convert_main(["lpips", str(src), "--out", str(out)]) == 0
    config, variables = bundle.load(out, "lpips")
    assert config["architecture"] == {"net": net, "version": "0.1"}
    return net, model, src, variables


def _nhwc(a: np.ndarray) -> jax.Array:
    return jnp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))


def test_state_dict_names_each_head_twice(converted, lpips_pkg):
    """The package's state dict has lin{k} and its ModuleList alias lins.{k}; the shipped heads are converted."""
    net, model, _, variables = converted
    sd = model.state_dict()
    shipped = torch.load(
        Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True
    )
    for k, c in enumerate(CHANNELS[net]):
        assert torch.equal(sd[f"lin{k}.model.1.weight"], sd[f"lins.{k}.model.1.weight"])
        np.testing.assert_array_equal(
            variables["params"][f"lin_{k}"], shipped[f"lin{k}.model.1.weight"].numpy().reshape(c)
        )
    assert any(k.startswith("net.slice5.") for k in sd) and "scaling_layer.shift" in sd


def test_distances_match_package(converted, images):
    net, model, _, variables = converted
    x, y = images
    with torch.no_grad():
        ref, ref_layers = model(torch.from_numpy(x), torch.from_numpy(y), retPerLayer=True)
    ref = ref.numpy().reshape(BATCH)
    ref_layers = np.stack([r.numpy().reshape(BATCH) for r in ref_layers], axis=1)
    lp = LPIPS(net, precision="highest")
    d = np.asarray(jax.jit(lp.apply)(variables, _nhwc(x), _nhwc(y)))
    layers = np.asarray(lp.apply(variables, _nhwc(x), _nhwc(y), per_layer=True))
    err = max_err(d, ref)
    print(
        f"lpips {net}: max |ours - package| {err:.3g}, relative {err / np.abs(ref).max():.3g} "
        f"(distances {ref.min():.3g}..{ref.max():.3g})"
    )
    assert ref.min() > 1e-3  # a meaningful comparison, not 0 vs 0
    assert_close(d, ref, f"lpips {net} distance")
    np.testing.assert_allclose(d, ref, rtol=1e-4)  # distances are O(0.1): relative check too
    assert_close(layers, ref_layers, f"lpips {net} per-layer")


def test_alias_that_differs_is_refused(converted, tmp_path, capsys):
    net, model, _, _ = converted
    sd = model.state_dict()
    sd["lins.2.model.1.weight"] = sd["lins.2.model.1.weight"] * 2  # no longer the tensor lin2 holds
    torch.save(sd, tmp_path / "differs.pth")
    assert convert_main(["lpips", str(tmp_path / "differs.pth"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'lin2.model.1.weight'" in err and "'lins.2.model.1.weight'" in err and "different values" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", ["lins.5.model.1.weight", "net.slice1.0.running_mean", "lin0.model.0.p"])
def test_other_unmatched_keys_are_errors_naming_them(converted, tmp_path, capsys, extra):
    """An alias is accepted only as a repeat of a matched weight; anything else stays an error."""
    _, model, _, _ = converted
    sd = dict(model.state_dict(), **{extra: torch.zeros(1, 64, 1, 1)})
    torch.save(sd, tmp_path / "extra.pth")
    assert convert_main(["lpips", str(tmp_path / "extra.pth"), "--out", str(tmp_path / "out")]) == 2
    assert repr(extra) in capsys.readouterr().err
