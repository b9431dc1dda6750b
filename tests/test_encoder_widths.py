"""Non-official encoder sizes (toy runs): custom widths/units of the backbone and style_channels.

The official architecture stays the default (its parity with the PyTorch reference is
tests/test_encoder_parity.py); these tests check that small encoders build and run at toy and official
input sizes, that the default still has the official parameter shapes, and that the training-time parts
(progressive stage mask, BatchNorm statistics) work with custom sizes.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.models.encoder import TAPS, Encoder4Editing, stage_taps, style_block_spatial
from e4e_jax.models.irse import IRSEBackbone, unit_specs
from tests.refs.psp_encoders import IRSEBody

SMALL = dict(widths=(16, 32, 64, 128), units=(1, 2, 2, 1))
N_STYLES = 8  # a 32x32 generator: styles read c3 (0-2), p2 (3-6) and p1 (7)


def _images(size, batch=2, seed=0):
    return jnp.asarray(np.random.RandomState(seed).uniform(-1, 1, (batch, *size, 3)).astype(np.float32))


def _conv_count(params, i):
    return sum(k.startswith("convs_") for k in params[f"styles_{i}"])


@pytest.mark.parametrize("size", [(32, 32), (256, 256)])
def test_small_encoder_runs(size):
    model = Encoder4Editing(n_styles=N_STYLES, precision="highest", **SMALL)
    x = _images(size)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    out = jax.jit(model.apply)(variables, x)
    assert out.shape == (2, N_STYLES, 512) and out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))
    p = variables["params"]
    assert p["backbone"]["input_layer"]["conv"]["kernel"].shape == (3, 3, 3, 16)
    assert len([k for k in p["backbone"] if k.startswith("body_")]) == sum(SMALL["units"])
    assert p["latlayer1"]["kernel"].shape == (1, 1, 64, 128) and p["latlayer2"]["kernel"].shape == (1, 1, 32, 128)
    # Style blocks: 128-ch convs, EqualLinear 128 -> 512 (W stays the generator's 512).
    assert p["styles_0"]["convs_0"]["kernel"].shape == (3, 3, 128, 128)
    assert p["styles_0"]["linear"]["weight"].shape == (128, 512)
    # Conv counts follow the maps (c3, p2, p1 = H/16, H/8, H/4): 32 px -> 2, 4, 8 -> 1, 2, 3 convs;
    # 256 px -> 16, 32, 64 -> the official 4, 5, 6.
    expect = (1, 2, 3) if size == (32, 32) else (4, 5, 6)
    assert [_conv_count(p, i) for i in (0, 3, 7)] == list(expect)
    # SE bottleneck of the 16-channel stage clamps to one channel (16 // 16) and keeps reduction 16 later.
    assert p["backbone"]["body_0"]["se"]["fc1"]["kernel"].shape == (1, 1, 16, 1)
    assert p["backbone"]["body_3"]["se"]["fc1"]["kernel"].shape == (1, 1, 64, 4)


def test_non_square_and_odd_inputs_reach_1x1():
    model = Encoder4Editing(n_styles=N_STYLES, **SMALL)
    for size in [(24, 32), (40, 40)]:  # c3 2x2 / 3x3; p1 6x8 / 10x10
        x = _images(size, batch=1)
        out = model.apply(model.init(jax.random.PRNGKey(0), x), x)
        assert out.shape == (1, N_STYLES, 512)


def test_style_block_spatial():
    assert [style_block_spatial((s, s), 16, False) for s in (1, 8, 16)] == [16, 16, 16]  # official: nominal
    assert [style_block_spatial(hw, 16, True) for hw in [(1, 1), (2, 2), (3, 2), (12, 16), (16, 16), (17, 8)]] == [
        2,
        2,
        4,
        16,
        16,
        32,
    ]


def test_default_is_official_architecture():
    """Parameter shapes of the default constructor (no weights are computed: eval_shape)."""
    model = Encoder4Editing(n_styles=N_STYLES)
    x = jnp.zeros((1, 256, 256, 3))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    p, stats = shapes["params"], shapes["batch_stats"]
    bb = p["backbone"]
    assert bb["input_layer"]["conv"]["kernel"].shape == (3, 3, 3, 64)
    assert sorted(int(k[5:]) for k in bb if k.startswith("body_")) == list(range(24))
    assert bb["body_0"]["se"]["fc1"]["kernel"].shape == (1, 1, 64, 4)
    assert bb["body_23"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
    assert bb["body_3"]["shortcut_conv"]["kernel"].shape == (1, 1, 64, 128)
    assert p["latlayer1"]["kernel"].shape == (1, 1, 256, 512) and p["latlayer2"]["kernel"].shape == (1, 1, 128, 512)
    assert p["styles_0"]["convs_0"]["kernel"].shape == (3, 3, 512, 512)
    assert p["styles_0"]["linear"]["weight"].shape == (512, 512)
    assert [_conv_count(p, i) for i in (0, 3, 7)] == [4, 5, 6]
    assert stats["backbone"]["body_5"]["bn1"]["mean"].shape == (128,)
    # Explicit official sizes are the default network, not a "custom" one.
    explicit = Encoder4Editing(n_styles=N_STYLES, widths=(64, 128, 256, 512), units=(3, 4, 14, 3), style_channels=512)
    assert jax.tree.map(lambda a: a.shape, jax.eval_shape(explicit.init, jax.random.PRNGKey(0), x)) == jax.tree.map(
        lambda a: a.shape, shapes
    )
    # The official network at a smaller input keeps the official conv counts (1x1 maps convolved, as
    # the official code does), so official checkpoints run unchanged.
    small_in = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))["params"]
    assert [_conv_count(small_in, i) for i in (0, 3, 7)] == [4, 5, 6]


def test_default_backbone_matches_reference_units():
    specs = unit_specs(50)
    assert specs == unit_specs(50, (64, 128, 256, 512), (3, 4, 14, 3))
    ref = IRSEBody(50, "ir_se")
    for t in TAPS:  # the official taps end stages 2-4: the next unit (if any) has stride 2
        assert t == len(ref.body) - 1 or ref.body[t + 1].res_layer[3].stride == (2, 2)
    assert stage_taps((3, 4, 14, 3)) == TAPS == (6, 20, 23)
    assert stage_taps((1, 2, 2, 1)) == (2, 4, 5)


def test_custom_backbone_taps_are_stage_ends():
    bb = IRSEBackbone(widths=(8, 16, 32, 48), units=(2, 1, 3, 2))
    x = _images((32, 32), batch=1)
    taps = stage_taps(bb.units)
    (y, feats), _ = bb.init_with_output(jax.random.PRNGKey(0), x, taps=taps)
    assert [f.shape[1:] for f in feats] == [(8, 8, 16), (4, 4, 32), (2, 2, 48)]
    np.testing.assert_array_equal(feats[-1], y)


def test_bad_sizes_are_clear_errors():
    x = _images((32, 32), batch=1)
    with pytest.raises(ValueError, match=r"style_channels=64 must equal widths\[3\]=128"):
        Encoder4Editing(n_styles=N_STYLES, style_channels=64, **SMALL).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="units must be four positive ints"):
        Encoder4Editing(n_styles=N_STYLES, units=(1, 2, 0, 1)).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="widths must be four positive ints"):
        Encoder4Editing(n_styles=N_STYLES, widths=(16, 32, 64)).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="num_layers=50"):
        Encoder4Editing(n_styles=N_STYLES, num_layers=100).init(jax.random.PRNGKey(0), _images((256, 256), 1))


def test_encoder_types_schema():
    """The bundle's encoder dict picks the module: 'encoder_type' and 'mode' must agree; either alone works
    (bundles written before the W encoder carry only 'mode')."""
    from e4e_jax.models import encoder_types
    from e4e_jax.models.encoder_types import EncoderConfig
    from e4e_jax.models.w_encoder import SingleStyleCodeEncoder

    base = dict(n_styles=N_STYLES, widths=[16, 32, 64, 128], units=[1, 2, 2, 1], style_channels=128)
    w = EncoderConfig.from_dict({**base, "encoder_type": "SingleStyleCodeEncoder"}).build(fuse_style_blocks=True)
    assert isinstance(w, SingleStyleCodeEncoder) and w.widths == (16, 32, 64, 128) and w.sizes()[0][3] == 128
    legacy = EncoderConfig.from_dict({**base, "mode": "psp"}).build(fuse_style_blocks=True)
    assert isinstance(legacy, Encoder4Editing) and legacy.mode == "psp" and legacy.fuse_style_blocks
    assert encoder_types.mode_of({"mode": "e4e", "encoder_type": "Encoder4Editing"}) == "e4e"
    with pytest.raises(ValueError, match="contradicts encoder_type 'SingleStyleCodeEncoder'"):
        encoder_types.mode_of({"mode": "e4e", "encoder_type": "SingleStyleCodeEncoder"})
    with pytest.raises(ValueError, match="encoder_type 'ProgressiveBackboneEncoder' unknown"):
        encoder_types.mode_of({"encoder_type": "ProgressiveBackboneEncoder"})
    with pytest.raises(ValueError, match="encoder mode must be one of"):
        EncoderConfig(mode="w+", n_styles=N_STYLES)
    with pytest.raises(ValueError, match=r"style_channels=64 must be None or widths\[3\]=128"):
        SingleStyleCodeEncoder(n_styles=N_STYLES, style_channels=64, **SMALL).sizes()


def test_encoder_config_round_trip():
    """to_dict / from_dict are inverse; the official sizes write no size keys (the on-disk form of every
    bundle so far); older dicts without num_layers / backbone_mode / input_nc read as the official values."""
    from e4e_jax.models.encoder_types import EncoderConfig

    toy = EncoderConfig(
        mode="e4e",
        n_styles=N_STYLES,
        input_size=(192, 256),
        widths=(16, 32, 64, 128),
        units=(1, 2, 2, 1),
        style_channels=128,
    )
    d = toy.to_dict()
    assert d["encoder_type"] == "Encoder4Editing" and d["widths"] == [16, 32, 64, 128] and d["input_size"] == [192, 256]
    assert EncoderConfig.from_dict(json.loads(json.dumps(d))) == toy
    official = EncoderConfig(mode="w", n_styles=18).to_dict()
    assert official == {
        "mode": "w",
        "encoder_type": "SingleStyleCodeEncoder",
        "n_styles": 18,
        "num_layers": 50,
        "backbone_mode": "ir_se",
        "input_nc": 3,
        "input_size": [256, 256],
    }
    old = EncoderConfig.from_dict({"mode": "psp", "n_styles": 18, "input_size": [256, 256]})
    assert old == EncoderConfig(mode="psp", n_styles=18)
    built = toy.build(precision="highest")
    assert isinstance(built, Encoder4Editing) and built.widths == (16, 32, 64, 128) and built.precision == "highest"


@pytest.fixture(scope="module")
def small_model():
    model = Encoder4Editing(n_styles=N_STYLES, precision="highest", **SMALL)
    x = _images((32, 32), batch=4, seed=1)
    variables = model.init(jax.random.PRNGKey(1), x)
    # Non-zero style-block biases and non-default BN statistics so that deltas and stats are non-trivial.
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    noisy = [leaf + 0.1 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    variables = jax.tree.unflatten(tree, noisy)
    variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])  # variances stay positive
    return model, variables, x


def test_progressive_stage_masking(small_model):
    model, variables, x = small_model
    f = jax.jit(lambda v, x, s: model.apply(v, x, progressive_stage=s))
    full = np.asarray(f(variables, x, jnp.int32(N_STYLES)))
    assert not np.allclose(full[:, 1:], full[:, :1])  # deltas are non-zero
    tol = 1e-5 * max(1.0, float(np.abs(full).max()))  # jit vs eager / e4e vs psp: float rounding only
    for stage in (0, 2, 5):
        out = np.asarray(f(variables, x, jnp.int32(stage)))
        same = np.all(out == out[:, :1], axis=(0, 2))
        np.testing.assert_array_equal(same[1:], np.arange(1, N_STYLES) > stage)
        np.testing.assert_allclose(out[:, : stage + 1], full[:, : stage + 1], rtol=0, atol=tol)
        py = model.apply(variables, x, progressive_stage=stage)
        np.testing.assert_allclose(np.asarray(py), out, rtol=0, atol=tol)
    # pSp mode on the same parameters: no w_0 + delta structure.
    psp = Encoder4Editing(n_styles=N_STYLES, mode="psp", precision="highest", **SMALL).apply(variables, x)
    np.testing.assert_allclose(full, np.asarray(psp[:, :1] + psp.at[:, 0].set(0.0)), rtol=0, atol=tol)


def test_train_mode_updates_batch_stats(small_model):
    model, variables, x = small_model

    @jax.jit
    def train_apply(v, x):
        return model.apply(v, x, progressive_stage=jnp.int32(3), train=True, mutable=["batch_stats"])

    out, updates = train_apply(variables, x)
    assert out.shape == (4, N_STYLES, 512)
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    # Every statistic moves by torch's momentum 0.1 towards the batch statistic.
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
        assert not np.allclose(np.asarray(a), np.asarray(b))
    # The input layer's running mean: 0.9 * old + 0.1 * batch mean of its conv output.
    conv = variables["params"]["backbone"]["input_layer"]["conv"]["kernel"]
    h = jax.lax.conv_general_dilated(
        x, conv, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )
    expect = 0.9 * old["backbone"]["input_layer"]["bn"]["mean"] + 0.1 * h.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(new["backbone"]["input_layer"]["bn"]["mean"], expect, atol=1e-5)
    # Train mode normalises with batch statistics: the output differs from eval mode.
    assert not np.allclose(np.asarray(out), np.asarray(model.apply(variables, x, progressive_stage=3)))


@pytest.mark.parametrize(
    "sizes,n_styles,hw", [(SMALL, N_STYLES, (32, 32)), (dict(widths=(8, 16, 16, 32), units=(1, 1, 1, 1)), 18, (64, 48))]
)
def test_fused_style_blocks_match_per_block(sizes, n_styles, hw):
    """fuse_style_blocks (one dense first conv + per-block convs + batched linear) on the same parameters."""
    x = _images(hw, batch=3, seed=4)
    plain = Encoder4Editing(n_styles=n_styles, precision="highest", **sizes)
    variables = plain.init(jax.random.PRNGKey(3), x)
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    variables = {
        **variables,
        "params": jax.tree.unflatten(
            tree, [leaf + 0.05 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
        ),
    }
    fused = plain.clone(fuse_style_blocks=True)
    for stage in (None, 2):
        a = np.asarray(plain.apply(variables, x, progressive_stage=stage))
        b = np.asarray(jax.jit(lambda v, x: fused.apply(v, x, progressive_stage=stage))(variables, x))
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(1.0, np.abs(a).max()))
    # init of the fused module builds the same per-block tree (bundles stay interchangeable).
    assert jax.tree.structure(fused.init(jax.random.PRNGKey(3), x)) == jax.tree.structure(variables)


@pytest.mark.parametrize("hw", [(2, 2), (1, 2), (2, 1), (1, 1)])
def test_style_tail_matmul_equals_stride2_conv(hw):
    """The last style conv (output 1x1) as a batched matmul over the kernel taps that meet the map."""
    from e4e_jax.models import fused_styles

    rng = np.random.default_rng(7)
    n, b, c, o = 3, 2, 5, 4
    parts = [jnp.asarray(rng.normal(size=(b, *hw, c)), jnp.float32) for _ in range(n)]
    kernels = [jnp.asarray(rng.normal(size=(3, 3, c, o)), jnp.float32) for _ in range(n)]
    biases = [jnp.asarray(rng.normal(size=(o,)), jnp.float32) for _ in range(n)]
    got = fused_styles._tail_as_matmul(parts, kernels, biases, jnp.float32, "highest")
    for g in range(n):
        want = fused_styles._conv_s2(parts[g], kernels[g], biases[g], "highest")
        assert want.shape == got[g].shape == (b, 1, 1, o)
        np.testing.assert_allclose(np.asarray(got[g]), np.asarray(want), rtol=1e-6, atol=1e-5)
