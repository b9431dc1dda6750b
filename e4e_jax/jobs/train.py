"""The `train` command's glue around training/loop.py's `train_and_evaluate`: `load_config` (the config file of
`--config` with the `--config.KEY=VALUE` overrides applied by ml_collections' config_flags, the flax examples'
parser, with one-line errors naming the field), `configure_logging`, and `train` (the compilation cache set up,
the metrics printed, failures mapped to exit codes of e4e_jax/errors.py).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from e4e_jax.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

FLAG = "config"
PREFIXES = (f"--{FLAG}.", f"--no{FLAG}.")  # an override, and absl's `--noconfig.flag` for a False boolean

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


def _register_dict_parser() -> None:
    """config_flags has no parser for plain-dict fields (`generator.random_init`): read them as a Python
    dict literal."""
    from absl import flags
    from ml_collections import config_flags

    class DictParser(flags.ArgumentParser):
        def parse(self, argument):
            value = ast.literal_eval(argument) if isinstance(argument, str) else argument
            if not isinstance(value, dict):
                raise ValueError(f"expected a Python dict such as {{'size': 32}}, got {argument!r}")
            return value

        def flag_type(self):
            return "dict"

    config_flags.register_flag_parser_for_type(dict, DictParser())


def _config_file(spec: str) -> Path:
    """The file `spec` names: a path, or the name of a config in e4e_jax/configs/."""
    from e4e_jax import configs

    if not Path(spec).suffix and spec in configs.NAMES:
        return configs.path(spec)
    if not Path(spec).is_file():
        raise ValueError(f"--config {spec}: no such file (and not a config name: {', '.join(configs.NAMES)})")
    return Path(spec)


def _unknown_field(config, key: str) -> str | None:
    """Why `--config.KEY` names no field of `config` (with the closest names), or None if it does."""
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        fields = list(node.keys()) if hasattr(node, "keys") else []
        if part not in fields:
            where = ".".join(parts[:depth]) or FLAG
            close = difflib.get_close_matches(part, fields, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; fields: {', '.join(sorted(fields))}"
            return f"--{FLAG}.{key}: {where} has no field {part!r}{hint}"
        node = node[part]
    return None


def _one_line(error: BaseException) -> str:
    """absl's and config_flags' messages in one line (a config file's traceback: its last line)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)  # KeyError quotes it
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]
    return "; ".join(lines) or type(error).__name__


def _parse_error(error: BaseException, path: str, overrides: Sequence[str]) -> str:
    """One line for a failed parse: the unknown field with its closest names if an override names none,
    else config_flags' own message."""
    spec = importlib.util.spec_from_file_location("e4e_config_check", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            return f"--{FLAG} {path}: the file defines no get_config()"
        config = module.get_config()
    except Exception:  # noqa: BLE001 - the file itself is broken: its own error says why
        config = None
    if not hasattr(config, "keys"):
        return f"--{FLAG} {path}: {_one_line(error)}"
    keys = [a.split("=", 1)[0].split(".", 1)[1] for a in overrides if a.startswith(PREFIXES)]
    unknown = next(filter(None, (_unknown_field(config, k) for k in keys)), None)
    return unknown or _one_line(error)


def load_config(spec: str, overrides: Sequence[str] = ()):
    """The config of `--config SPEC` with the `--config.KEY=VALUE` tokens `overrides` applied, parsed by
    ml_collections' config_flags. Raises ValueError (one line) for a missing file, an unknown field or a
    value of the wrong type."""
    from absl import flags
    from ml_collections import config_flags

    _register_dict_parser()
    argv = ["e4e-jax train", f"--{FLAG}={_config_file(spec)}", *overrides]
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file(FLAG, flag_values=values, lock_config=False, sys_argv=argv)
    try:
        unparsed = values(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(_parse_error(e, argv[1].partition("=")[2], overrides)) from e
    if len(unparsed) > 1:
        raise ValueError(f"unexpected argument {unparsed[1]!r} (a boolean field takes '=': --{FLAG}.KEY=false)")
    if not hasattr(holder.value, "keys"):
        raise ValueError(f"--{FLAG} {spec}: get_config() returned {type(holder.value).__name__}, not a config")
    return holder.value
