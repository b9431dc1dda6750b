"""Latent discriminator D_W (parity with a PyTorch reference built from the official architecture),
the functional LatentCodesPool and the progressive schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from e4e_jax.models.latent_discriminator import LatentCodesDiscriminator, params_from_state_dict
from e4e_jax.storage.torchfile import load_checkpoint
from e4e_jax.training import pool, schedule


class TorchLatentCodesDiscriminator(nn.Module):
    """Reference from the published architecture (official models/discriminator.py facts):
    (n_mlp - 1) x [nn.Linear(512, 512), LeakyReLU(0.2)] then nn.Linear(512, 1), in an `mlp` Sequential."""

    def __init__(self, style_dim=512, n_mlp=4):
        super().__init__()
        layers = []
        for _ in range(n_mlp - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(512, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w):
        return self.mlp(w)


def test_parity_with_official_checkpoint_layout(tmp_path):
    torch.manual_seed(0)
    ref = TorchLatentCodesDiscriminator().eval()
    with torch.no_grad():  # non-default, larger weights so the LeakyReLU branches both matter
        for p in ref.parameters():
            p.mul_(3.0).add_(0.01 * torch.randn_like(p))
    path = tmp_path / "train_ckpt.pt"
    torch.save({"discriminator_state_dict": ref.state_dict(), "global_step": 7}, path)
    sd = load_checkpoint(path)["discriminator_state_dict"]
    assert sorted(sd) == sorted(ref.state_dict())
    params = params_from_state_dict(sd)

    w = torch.randn(3, 5, 512) * 2.0
    with torch.no_grad():
        want = ref(w).numpy()
    got = LatentCodesDiscriminator(precision="highest").apply({"params": params}, jnp.asarray(w.numpy()))
    got = np.asarray(got)
    assert got.shape == want.shape == (3, 5, 1)
    assert np.max(np.abs(got - want)) <= 1e-4 * max(1.0, np.max(np.abs(want)))


def test_params_mapping_errors_name_the_key():
    sd = {k: v.numpy() for k, v in TorchLatentCodesDiscriminator().state_dict().items()}
    sd.pop("mlp.4.bias")
    sd["mlp.8.weight"] = np.zeros((1, 512), np.float32)
    with pytest.raises(ValueError, match=r"mlp\.4\.bias.*mlp\.8\.weight"):
        params_from_state_dict(sd)


def test_init_matches_torch_linear_ranges():
    p = LatentCodesDiscriminator().init(jax.random.key(0), jnp.zeros((1, 512)))["params"]
    assert sorted(p) == ["mlp_0", "mlp_2", "mlp_4", "mlp_6"]
    bound = 1 / np.sqrt(512)
    for layer in p.values():
        for leaf in layer.values():
            a = np.asarray(leaf)
            assert np.max(np.abs(a)) <= bound  # U(±1/√fan_in) like torch
            if a.size >= 512:
                assert np.max(np.abs(a)) > 0.9 * bound
    assert p["mlp_6"]["kernel"].shape == (512, 1)


# ----------------------------------------------------------------------------- LatentCodesPool


def test_pool_fills_then_swaps_half_the_time():
    size, d = 6, 3
    state = pool.init_pool(size, d)
    first = jnp.arange(4 * d, dtype=jnp.float32).reshape(4, d)
    out, state = pool.query(state, first, jax.random.key(0))
    np.testing.assert_array_equal(out, first)  # not full: returns the input and stores it
    assert int(state.count) == 4
    np.testing.assert_array_equal(state.codes[:4], first)

    # 2 more fill it (returned as is), the rest follow the 50% swap rule.
    codes = 100.0 + jnp.arange(402 * d, dtype=jnp.float32).reshape(402, d)
    out, new = pool.query(state, codes, jax.random.key(1))
    out, stored = np.asarray(out), np.asarray(new.codes)
    np.testing.assert_array_equal(out[:2], codes[:2])
    assert int(new.count) == size
    # Replay the official semantics on the outputs: each output is the input (no swap) or the code then at
    # some slot, which the input replaces.
    slots = np.concatenate([np.asarray(first), np.asarray(codes[:2])])
    swaps = 0
    for w, o in zip(np.asarray(codes[2:]), out[2:]):
        if np.array_equal(o, w):
            continue
        hits = np.nonzero((slots == o).all(axis=1))[0]
        assert len(hits) == 1, "a swapped-out code must come from the pool"
        slots[hits[0]] = w
        swaps += 1
    np.testing.assert_array_equal(slots, stored)
    assert 160 <= swaps <= 240  # ~Binomial(400, 1/2)


def test_pool_size_zero_is_identity_and_layer_selection():
    codes = jax.random.normal(jax.random.key(0), (5, 4, 8))
    sel = pool.select_layers(codes, 2, jax.random.key(1))
    for i in range(5):
        assert any(np.array_equal(sel[i], codes[i, j]) for j in range(2))
    sel_all = pool.select_layers(codes, 4, jax.random.key(2))
    assert sel_all.shape == (5, 8)
    out, st = pool.query(pool.init_pool(0, 8), sel, jax.random.key(3))
    np.testing.assert_array_equal(out, sel)


# ----------------------------------------------------------------------------- progressive schedule


def _official_stage(step: int, n_styles: int, start: int, every: int) -> int:
    """scripts/train.py setup_progressive_steps + coach.check_for_progressive_training_update, replayed."""
    steps = [0]
    nxt = start
    for _ in range(n_styles - 1):
        steps.append(nxt)
        nxt += every
    stage = None
    for s in range(step + 1):  # the coach updates the stage when global_step hits a boundary
        for i, b in enumerate(steps):
            if s == b:
                stage = i
    return stage


@pytest.mark.parametrize("n_styles,start,every", [(18, 20, 4), (14, 5, 3), (4, 0, 1)])
def test_progressive_stage_matches_official(n_styles, start, every):
    for step in range(0, start + every * (n_styles + 2)):
        want = _official_stage(step, n_styles, start, every)
        assert schedule.progressive_stage(step, n_styles, start, every) == want
        assert int(schedule.progressive_stage(jnp.int32(step), n_styles, start, every)) == want
    assert schedule.stage_boundaries(n_styles, start, every)[1] == start


def test_progressive_off_uses_all_deltas():
    assert schedule.progressive_stage(0, 18, None) == 17
    assert int(schedule.progressive_stage(jnp.int32(5), 18, None)) == 17
    np.testing.assert_array_equal(schedule.active_layers(2, 5), [True, True, True, False, False])
