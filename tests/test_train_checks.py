"""`e4e-jax train`'s checks before the first step (issue 30, items 3 and 5; issue 24, item 10): a W pool of
size 0 is refused at once (and a run without the pool checkpoints), a batch the machine cannot hold is
refused before anything is allocated, and the compilation of the steps is said, with an estimate and the
time it took, before the progress bar starts."""

from __future__ import annotations

import logging
import math
import re

import pytest

from e4e_jax import cli, errors, sharding
from e4e_jax.training.loop import train_and_evaluate
from tests.training_helpers import small_config


def _train(capsys, *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(["train", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_an_empty_w_pool_is_refused_before_any_work(tmp_path, capsys):
    work = tmp_path / "w"
    code, err = _train(capsys, "--config", "configs/tiny.py", "--workdir", str(work), "--config.w_pool_size=0")
    assert code == errors.EXIT_USAGE and len(err) == 1, err
    assert err[0].startswith("error: config.w_pool_size=0: must be ≥ 1 while config.use_w_pool is on"), err
    assert "--config.use_w_pool=false" in err[0]
    assert not work.exists()


def test_a_batch_far_beyond_the_machine_is_refused_before_anything_is_allocated(tmp_path, capsys):
    work = tmp_path / "w"
    code, err = _train(capsys, "--config", "configs/tiny.py", "--workdir", str(work), "--config.batch_size=100000000")
    assert code == errors.EXIT_USAGE and len(err) == 1, err
    assert err[0].startswith("error: config.batch_size=100000000: one batch of input images needs "), err
    assert "GiB per device" in err[0] and "lower --config.batch_size" in err[0], err
    assert not work.exists()
    code, err = _train(
        capsys, "--config", "configs/tiny.py", "--workdir", str(work), "--config.test_batch_size=100000000"
    )
    assert code == errors.EXIT_USAGE and err[0].startswith(
        "error: config.test_batch_size=100000000: the validation set"
    )
    assert not work.exists()


def test_a_step_that_does_not_fit_a_device_is_refused_from_its_memory_analysis(tmp_path, monkeypatch):
    """A device of 1 MiB: the input batch fits (the early check passes), the compiled step (weights,
    optimizer state, activations) does not; refused before the first step allocates anything."""
    monkeypatch.setattr(sharding, "memory_per_device", lambda devices=None: 2**20)
    with pytest.raises(errors.UserError, match=r"config.batch_size=8: the training step \(XLA's memory analysis\)"):
        train_and_evaluate(small_config(max_steps=2), tmp_path / "w")
    assert not list((tmp_path / "w" / "checkpoints").iterdir())


def test_without_the_w_pool_a_run_checkpoints_and_resumes(tmp_path, caplog):
    """use_w_pool=false (the state's pools unused) used to fail at the first checkpoint (orbax cannot save a
    zero-size array). The steps' compilation is said before the progress bar, with the time it took."""
    config = small_config(max_steps=3, save_interval=1, use_w_pool=False, val_interval=2, image_interval=2)
    with caplog.at_level(logging.INFO, logger="e4e_jax"):
        first = train_and_evaluate(config, tmp_path, max_steps=2)
    said = [r.getMessage() for r in caplog.records if r.name == "e4e_jax.training.precompile"]
    assert said[0].startswith("compiling the training step (") and said[0].endswith(" s)"), said
    assert said[1].startswith(("compiled the training step in ", "loaded the training step from")), said
    # The evaluation step, for the grid of a training batch (8) and the validation batches (4), compiled too.
    evals = [re.match(r"compiling the evaluation step \(batch (\d+)\) \(", m) for m in said]
    assert sorted(int(m.group(1)) for m in evals if m) == [4, 8], said
    assert first["step"] == 2 and math.isfinite(first["train/loss"])
    final = train_and_evaluate(config, tmp_path, resume=True)
    assert final["step"] == 3 and math.isfinite(final["train/loss"])
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 3
