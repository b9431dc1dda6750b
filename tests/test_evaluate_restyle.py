"""`e4e-jax evaluate` on a ReStyle bundle: the model loads by its kind (inference/inverters.py) and the
codes are ReStyle's iterations from the average image, as `invert` runs them (it was refused before:
evaluate loaded with inversion.load_e4e). The bundle is tests/test_restyle.py's random-weight toy; the
photos are the official samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from e4e_jax.cli import main as cli_main
from e4e_jax.data import folder
from e4e_jax.inference import inverters, restyle
from e4e_jax.metrics import evaluator
from tests import assets, shared_files
from tests.test_restyle import make_restyle_bundle


@pytest.fixture(scope="module")
def restyle_model(shared_dir) -> Path:
    return shared_files.made_once(shared_dir, "small-restyle", lambda p: make_restyle_bundle(p))


def test_evaluate_a_restyle_bundle(restyle_model, tmp_path):
    photos = assets.require("images")
    n = len(folder.scan_images(photos)[0])
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(restyle_model), "--images", str(photos), "--output", str(out)]
    assert cli_main([*argv, "--num-samples", "0", "--batch-size", "2"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_images"] == n and report["n_skipped"] == 0
    l2 = report["distortion"]["per_image"]
    assert len(l2) == n
    assert all(math.isfinite(v["l2"]) for v in l2.values())


def test_evaluator_encodes_with_the_restyle_kernel(restyle_model):
    model = inverters.load(restyle_model)
    assert isinstance(model, restyle.RestyleModel)
    ev = evaluator.Evaluator(model, recovery_samples=0, batch_size=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *model.input_hw, 3)).astype(np.float32)
    kernel = inverters.kernel(model, images="none")
    expected = np.asarray(kernel.fn(kernel.variables, x))
    np.testing.assert_allclose(np.asarray(ev.encode(ev.shard(x))), expected, rtol=1e-5, atol=1e-5)
