"""Synthesis and inversion sharded over several (simulated CPU) devices give the single-device result,
for both modulation paths (the grouped conv runs per device under shard_map)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    assert jax.device_count() == 4
    from e4e_jax.inference import render, inversion
    from e4e_jax.runtime import sharding
    from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
    from tests.test_invert_cli import make_e4e_bundle

    cfg = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2, style_dim=32)
    v = init_variables(cfg, jax.random.key(0))
    ws = np.random.default_rng(0).standard_normal((6, cfg.n_latent, 32)).astype(np.float32)
    one = sharding.data_mesh(jax.devices()[:1])
    for m in ("grouped", "activation"):
        single = np.concatenate(list(render.iter_synthesize(cfg, v, ws, batch_size=4, modulation=m, mesh=one)))
        multi = np.concatenate(list(render.iter_synthesize(cfg, v, ws, batch_size=4, modulation=m)))
        assert multi.shape == (6, 16, 16, 3), multi.shape
        np.testing.assert_allclose(multi, single, atol=1e-5)

    model = inversion.load_e4e(str(make_e4e_bundle(__import__("pathlib").Path({tmp!r}) / "b")))
    x = np.random.default_rng(1).uniform(-1, 1, (5, 256, 256, 3)).astype(np.float32)
    batches = [(x, [str(i) for i in range(5)], [])]
    lat4, img4, *_ = next(inversion.iter_invert(model, iter(batches), batch_size=4))
    lat1, img1, *_ = next(inversion.iter_invert(model, iter(batches), batch_size=8, mesh=one))
    assert lat4.shape == (5, 6, 512) and img4.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(lat4, lat1, atol=1e-4)
    np.testing.assert_allclose(img4, img1, atol=1e-4)

    # The copy back through pinned host memory (the route on GPU/TPU), forced on the CPU devices:
    # the same values, sharded the same way, in host memory.
    mesh = sharding.data_mesh(jax.devices())
    assert not inversion._has_pinned_host(mesh.devices.flat)  # CPU: the plain async copy by default
    a = sharding.shard_batch(np.arange(8 * 3, dtype=np.uint8).reshape(8, 3), mesh)
    for pinned in (True, False):
        (back,) = inversion._to_host_memory((a,), pinned=pinned)
        assert back.sharding.memory_kind == ("pinned_host" if pinned else a.sharding.memory_kind)
        assert back.sharding.device_set == a.sharding.device_set
        np.testing.assert_array_equal(np.asarray(back), np.asarray(a))
    print("OK")
""")


def test_sharded_inference_matches_single_device(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT), tmp=str(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
