"""`evaluator.Evaluator`, the library call behind `e4e-jax evaluate`: batches in, the report out.

The metrics themselves are checked against the official computations in test_evaluate_cli.py; here the
accumulation: batch boundaries change nothing, given codes and reconstructions are used as they are,
and the report names every image.
"""

import numpy as np
import pytest

from e4e_jax.inference import inversion
from e4e_jax.metrics import definitions, evaluator
from tests.test_hostile_inputs import ENC_HW, models  # noqa: F401 - the tiny bundles fixture


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *ENC_HW, 3)).astype(np.float32)


def test_batches_accumulate_and_report(models):  # noqa: F811
    model = inversion.load_e4e(models["e4e"])
    x = _images(3)
    names = ["a.png", "b.png", "c.png"]
    split = evaluator.Evaluator(model, recovery_samples=2, batch_size=2)
    split.add(x[:2], names[:2])
    split.add(x[2:], names[2:])
    whole = evaluator.Evaluator(model, recovery_samples=0, batch_size=4)
    whole.add(x, names)
    assert split.count == whole.count == 3
    a, b = split.report(), whole.report()
    assert list(a) == ["distortion", "perception", "latent", "notes"]  # no edits: no editability
    assert list(a["distortion"]["per_image"]) == names
    for name in names:
        assert a["distortion"]["per_image"][name]["l2"] == pytest.approx(
            b["distortion"]["per_image"][name]["l2"], rel=1e-5
        )
    assert a["latent"]["recovery_samples"] == 2 and np.isfinite(a["latent"]["recovery"])
    assert "recovery" not in b["latent"]
    assert set(a["notes"]) == {"lpips", "fid", "lec"}  # what was not computed, each with its reason
    # the reconstructions are G(E(x)) in the encoder's frame
    recon = np.asarray(whole.generate(whole.encode(whole.shard(x))))[:3]
    np.testing.assert_allclose(
        [b["distortion"]["per_image"][n]["l2"] for n in names],
        np.asarray(definitions.l2_per_image(x, recon)),
        rtol=1e-5,
    )


def test_given_codes_and_reconstructions_are_used_and_edits_give_lec(models):  # noqa: F811
    model = inversion.load_e4e(models["e4e"])
    x = _images(2, seed=1)
    n = model.gen_config.n_latent
    direction = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    ev = evaluator.Evaluator(
        model, recovery_samples=0, batch_size=2, edits=[("d x3", *definitions.interfacegan_pair(direction, 3.0))]
    )
    codes = np.zeros((2, n, 512), np.float32)
    ev.add(x, ["a", "b"], codes, x)  # reconstructions identical to the originals
    r = ev.report()
    assert r["distortion"]["l2"] == 0.0 and r["latent"]["variation"] == 0.0
    assert list(r["editability"]["edits"]) == ["d x3"] and r["editability"]["lec_batch"] == 1
    with pytest.raises(ValueError, match="no images"):
        evaluator.Evaluator(model, recovery_samples=0).report()
