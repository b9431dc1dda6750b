"""`e4e-jax train`'s `--config` and `--config.KEY=VALUE` arguments: the overrides set aside from argparse
(`OverrideParser`) and applied to the config file by ml_collections' config_flags (`load_config`), the flax
examples' parser, with one-line errors naming the field.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

FLAG = "config"
PREFIXES = (f"--{FLAG}.", f"--no{FLAG}.")  # an override, and absl's `--noconfig.flag` for a False boolean


class OverrideParser(argparse.ArgumentParser):
    """Sets the `--config.KEY[=VALUE]` tokens aside, in order, for config_flags (argparse cannot declare
    options with a free suffix); the rest is parsed as declared."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        rest, overrides, i = [], [], 0
        while i < len(args):
            a = args[i]
            if a.startswith(PREFIXES):
                overrides.append(a)
                # `--config.KEY VALUE`: the next token is the value unless it is another option (train takes
                # no positional arguments; "-1" is a value).
                if "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("--"):
                    overrides.append(args[i + 1])
                    i += 1
            else:
                rest.append(a)
            i += 1
        ns, extra = super().parse_known_args(rest, namespace)
        ns.config_flags = overrides
        return ns, extra


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
