"""`e4e-jax quickstart` end to end (short: 120 training steps, two held-out samples) and that it learns."""

from __future__ import annotations

import json
import shlex

import pytest

from e4e_jax.cli import main as cli_main

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)


def test_quickstart_runs_end_to_end(tmp_path, capsys, monkeypatch):
    work = tmp_path / "qs"
    assert cli_main(["quickstart", "--workdir", str(work), "--steps", "120", "--heldout", "2"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((work / "metrics.json").read_text())
    held = metrics["heldout"]
    assert held["n_images"] == 2 and held["l2_mean"] > 0 and held["latent_recovery_mean"] > 0
    assert metrics["training"]["step"] == 120
    # The small encoder of configs/tiny.py learns within CPU-seconds: the training L2 falls.
    learn = metrics["learning"]
    assert learn["train_l2_logged"] == 12
    assert learn["train_l2_last_quarter"] < 0.8 * learn["train_l2_first_quarter"], learn
    assert held["l2_mean_if_answered_by_latent_avg"] > 0
    assert (work / "quickstart_grid.png").stat().st_size > 0
    assert (work / "train" / "model" / "config.json").is_file()
    # A second run into the same folder is refused rather than mixing results.
    assert cli_main(["quickstart", "--workdir", str(work)]) == 2
    # It ends by saying what the model is, where it is and what to run on it; the printed edit runs as printed.
    assert "The quickstart model is a toy" in printed and "  model      train/model" in printed
    edit = next(line.strip() for line in printed.splitlines() if line.strip().startswith("e4e-jax edit "))
    edit = edit.replace("--latents inverted", "--latents inversion")  # the printed invert's output: made here
    monkeypatch.chdir(work)  # the printed commands run after the printed `cd WORKDIR`
    assert cli_main(shlex.split(edit)[1:]) == 0 and (work / "edited" / "grid.png").is_file()
    # --model WORKDIR says where the model is (before any other check of the command).
    assert cli_main(shlex.split(edit.replace("--model train/model", "--model ."))[1:]) == 2
    assert "its trained model is train/model: pass --model train/model" in capsys.readouterr().err
