"""`e4e-jax quickstart` end to end (short: 120 training steps, two held-out samples) and that it learns."""

from __future__ import annotations

import json

from e4e_jax.cli import main as cli_main


def test_quickstart_runs_end_to_end(tmp_path):
    work = tmp_path / "qs"
    assert cli_main(["quickstart", "--workdir", str(work), "--steps", "120", "--heldout", "2"]) == 0
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
