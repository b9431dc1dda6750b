"""`e4e-jax quickstart` end to end (short: a few training steps, two held-out samples)."""
from __future__ import annotations

import json

from e4e_jax.cli import main as cli_main


def test_quickstart_runs_end_to_end(tmp_path):
    work = tmp_path / "qs"
    assert cli_main(["quickstart", "--workdir", str(work), "--steps", "2", "--heldout", "2"]) == 0
    metrics = json.loads((work / "metrics.json").read_text())
    held = metrics["heldout"]
    assert held["n_images"] == 2 and held["l2_mean"] > 0 and held["latent_recovery_mean"] > 0
    assert metrics["training"]["step"] == 2
    assert (work / "quickstart_grid.png").stat().st_size > 0
    assert (work / "train" / "model" / "config.json").is_file()
    # A second run into the same folder is refused rather than mixing results.
    assert cli_main(["quickstart", "--workdir", str(work)]) == 2
