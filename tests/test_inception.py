"""FID Inception-v3: pytorch-fid layout checkpoint -> real converter (CLI) -> Flax vs the PyTorch reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.models.inception import FIDInceptionV3
from e4e_jax.models.resampling import bilinear_matrix, resize_bilinear
from e4e_jax.storage import bundle
from tests.parity import max_err as _err
from tests.parity import tolerance as _tol  # noqa: E402
from tests.refs.inception_ref import FIDInceptionRef
from tools.convert_weights.__main__ import main as convert_main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inception")
    ref = FIDInceptionRef().randomize_(seed=0).eval()
    state = ref.state_dict()
    assert "Mixed_7c.branch_pool.bn.num_batches_tracked" in state and "fc.weight" in state
    src = tmp / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, src)
    out = tmp / "bundle"
    assert convert_main(["inception", str(src), "--out", str(out)]) == 0
    config, variables = bundle.load(out, "inception")
    model = FIDInceptionV3(num_classes=config["architecture"]["num_classes"], precision="highest")
    apply = jax.jit(lambda v, x: model.apply(v, x, return_logits=True))
    return dict(tmp=tmp, ref=ref, state=state, src=src, config=config, variables=variables, apply=apply)


@pytest.mark.parametrize("shape", [(2, 256, 256), (1, 299, 299)])
def test_pool3_and_logits_match_reference(setup, shape):
    b, h, w = shape
    x = np.random.RandomState(h).uniform(0, 1, (b, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        r_pool, r_logits = setup["ref"](torch.from_numpy(x))
    pool, logits = setup["apply"](setup["variables"], jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert pool.shape == (b, 2048) and logits.shape == (b, 1008)
    e_pool, e_logits = _err(pool, r_pool.numpy()), _err(logits, r_logits.numpy())
    print(
        f"{shape}: pool3 max err {e_pool:.2e} (max |ref| {r_pool.abs().max():.2f}), "
        f"logits max err {e_logits:.2e} (max |ref| {r_logits.abs().max():.2f})"
    )
    assert e_pool <= _tol(r_pool.numpy()) and e_logits <= _tol(r_logits.numpy())
    # Features must be informative (not collapsed by the random weights).
    assert float(r_pool.std()) > 0.05


def test_bundle_layout(setup):
    arch = setup["config"]["architecture"]
    assert arch == {"name": "fid_inception_v3", "source_layout": "pytorch-fid", "num_classes": 1008}
    v = setup["variables"]
    assert v["params"]["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert v["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    np.testing.assert_array_equal(
        v["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
        setup["state"]["Mixed_7c.branch_pool.bn.running_var"].numpy(),
    )
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], setup["state"]["fc.weight"].numpy().T)


@pytest.mark.parametrize("n_in,n_out", [(256, 299), (1024, 299), (299, 299), (7, 3), (3, 8), (64, 299)])
def test_bilinear_matrix_matches_torch(n_in, n_out):
    x = np.random.RandomState(n_in).randn(1, 2, n_in, 5).astype(np.float32)
    r = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(n_out, 5), mode="bilinear", align_corners=False
    ).numpy()
    ours = np.einsum("oh,bchw->bcow", bilinear_matrix(n_in, n_out).astype(np.float64), x.astype(np.float64))
    # Float32 source indices near 1024 are quantised to 6e-5: torch's fused multiply-add rounding must be
    # matched, not only the formula.
    assert _err(ours, r) <= 2e-6
    y = resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), (n_out, 5))
    assert _err(y, r.transpose(0, 2, 3, 1)) <= 2e-6


def _convert_error(tmp, name, state, capsys):
    path = tmp / f"{name}.pth"
    torch.save(state, path)
    rc = convert_main(["inception", str(path), "--out", str(tmp / f"{name}_out")])
    return rc, capsys.readouterr().err


def test_converter_errors(setup, capsys):
    tmp, state = setup["tmp"], setup["state"]
    missing = {k: v for k, v in state.items() if k != "Mixed_6c.branch7x7dbl_3.bn.running_mean"}
    rc, err = _convert_error(tmp, "missing", missing, capsys)
    assert rc == 2 and "Mixed_6c.branch7x7dbl_3.bn.running_mean" in err and "missing" in err

    extra = dict(state, **{"AuxLogits.fc.weight": torch.zeros(1008, 768)})
    rc, err = _convert_error(tmp, "extra", extra, capsys)
    assert rc == 2 and "AuxLogits.fc.weight" in err

    bad = dict(state, **{"Mixed_5b.branch1x1.conv.weight": torch.zeros(64, 192, 3, 3)})
    rc, err = _convert_error(tmp, "shape", bad, capsys)
    assert rc == 2 and "Mixed_5b.branch1x1.conv.weight" in err and "(64, 192, 1, 1)" in err

    tv = {k: v for k, v in state.items() if not k.startswith("fc.")}
    tv["AuxLogits.conv0.conv.weight"] = torch.zeros(128, 768, 1, 1)
    rc, err = _convert_error(tmp, "torchvision", tv, capsys)
    assert rc == 2 and "fc.weight" in err and "pt_inception-2015-12-05-6726825d.pth" in err

    wrapped = tmp / "wrapped.pth"
    torch.save({"state_dict": state}, wrapped)
    assert convert_main(["inception", str(wrapped), "--out", str(tmp / "wrapped_out")]) == 0
