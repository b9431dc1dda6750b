"""`train(config, workdir, ...)`: the `train` command's run of training/loop.py's `train_and_evaluate`, with
e4e-jax's logging and compilation cache set up, its metrics printed and its failures mapped to exit codes
(e4e_jax/errors.py).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

from e4e_jax.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

NOISY_LOGGERS = ("absl", "jax._src", "orbax")  # their INFO lines drown e4e-jax's own


def configure_logging(level: str) -> None:
    """INFO lines with times for the run; `level` (debug, info, warning) for e4e-jax's own loggers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("e4e_jax").setLevel(level.upper())


def train(config, workdir: Path, resume: bool = False, max_steps: Optional[int] = None) -> int:
    """Train `config` (an ml_collections ConfigDict) into `workdir`; prints the final metrics as JSON.
    Returns EXIT_OK, EXIT_PARTIAL for a non-finite loss, EXIT_USAGE for a bundle or data folder that
    cannot be read."""
    from e4e_jax.runtime import compile_cache
    from e4e_jax.training.loop import NonFiniteLossError, train_and_evaluate

    # The training step compiles for seconds to minutes: a second run of the same config loads it instead
    # (from e4e-jax's cache directory, unless JAX_COMPILATION_CACHE_DIR already chose one).
    if compile_cache.directory() is None and compile_cache.enable() is None:
        logging.getLogger("e4e_jax").info("cannot use %s as the compilation cache", compile_cache.default_dir())

    try:
        metrics = train_and_evaluate(config, workdir, resume=resume, max_steps=max_steps)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PARTIAL
    except (ValueError, OSError) as e:  # e.g. a bundle or data folder named in the config
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return EXIT_OK
