"""IR / IR-SE backbone parity against the PyTorch reference (random weights, non-default BN stats)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.models.irse import IRSEBackbone, unit_specs
from tests.parity import tolerance as _tol  # noqa: E402
from tests.refs.psp_encoders import IRSEBody, randomize_
from tools.convert_weights.irse import detect_backbone, irse_to_variables
from tools.convert_weights.state_dicts import KeyTracker

TAPS = (6, 20, 23)


def _convert(body):
    sd = {k: v.numpy() for k, v in body.state_dict().items()}
    keys = KeyTracker(sd, "", "test state dict")
    num_layers, mode = detect_backbone(keys)
    params, stats = irse_to_variables(keys, num_layers, mode)
    keys.check_all_used()
    return num_layers, mode, {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).uniform(-1, 1, (2, 3, 48, 64)).astype(np.float32)


@pytest.mark.parametrize("mode", ["ir_se", "ir"])
def test_backbone_parity(mode, images):
    body = randomize_(IRSEBody(50, mode), seed=1).eval()
    with torch.no_grad():
        ref_out, ref_taps = body(torch.from_numpy(images), taps=TAPS)
    num_layers, detected_mode, variables = _convert(body)
    assert (num_layers, detected_mode) == (50, mode)
    model = IRSEBackbone(50, mode, precision="highest")
    out, taps = jax.jit(lambda v, x: model.apply(v, x, taps=TAPS))(variables, jnp.asarray(images.transpose(0, 2, 3, 1)))
    for ours, ref in zip([out, *taps], [ref_out, *ref_taps]):
        ref = ref.numpy().transpose(0, 2, 3, 1)
        assert ours.shape == ref.shape
        err = float(np.abs(np.asarray(ours) - ref).max())
        assert err <= _tol(ref), (mode, ref.shape, err, float(np.abs(ref).max()))
    # Official feature sizes of the e4e taps: H/4 x 128, H/8 x 256, H/16 x 512.
    assert [t.shape[1:] for t in taps] == [(12, 16, 128), (6, 8, 256), (3, 4, 512)]


def test_train_mode_uses_batch_stats_and_updates_them(images):
    body = randomize_(IRSEBody(50, "ir_se"), seed=2)
    body.train()
    x = torch.from_numpy(images)
    with torch.no_grad():
        ref_out, _ = body(x)
    _, _, variables = _convert(randomize_(IRSEBody(50, "ir_se"), seed=2))
    model = IRSEBackbone(50, "ir_se", precision="highest")
    (out, _), new_vars = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jnp.asarray(images.transpose(0, 2, 3, 1))
    )
    ref = ref_out.numpy().transpose(0, 2, 3, 1)
    assert float(np.abs(np.asarray(out) - ref).max()) <= _tol(ref)
    # Running mean follows torch's momentum 0.1 update.
    ours_mean = np.asarray(new_vars["batch_stats"]["input_layer"]["bn"]["mean"])
    np.testing.assert_allclose(ours_mean, body.input_layer[1].running_mean.numpy(), atol=1e-5)


def test_unit_specs_match_reference():
    for n in (50, 100, 152):
        ref = IRSEBody(n, "ir")
        specs = unit_specs(n)
        assert len(specs) == len(ref.body)
        for (in_c, depth, stride), unit in zip(specs, ref.body):
            assert unit.res_layer[1].in_channels == in_c and unit.res_layer[3].out_channels == depth
            assert unit.res_layer[3].stride == (stride, stride)


def test_bf16_path_close(images):
    _, _, variables = _convert(randomize_(IRSEBody(50, "ir_se"), seed=3).eval())
    x = jnp.asarray(images.transpose(0, 2, 3, 1))
    f32, _ = jax.jit(IRSEBackbone(50, "ir_se").apply)(variables, x)
    bf16, _ = jax.jit(IRSEBackbone(50, "ir_se", dtype=jnp.bfloat16).apply)(variables, x)
    assert bf16.dtype == jnp.bfloat16
    rel = float(jnp.abs(bf16.astype(jnp.float32) - f32).max() / jnp.abs(f32).max())
    assert rel < 0.1, rel
