"""`e4e-jax train`: train an e4e encoder from an ml_collections config file.

    e4e-jax train --config configs/ffhq.py --workdir runs/ffhq \\
        --config.data.train_dir=/data/ffhq --config.generator.bundle=models/stylegan2-ffhq \\
        --config.lpips_bundle=models/lpips-alex --config.id_bundle=models/arcface [--resume]

`--config.KEY=VALUE` (or `--config.KEY VALUE`) overrides any field, as flax examples' config_flags do:
VALUE is parsed as a Python literal (numbers, True/False, None, tuples) unless the field is a string.
Several processes (TPU pods, several hosts): the same command on every host, with
`--config.distributed.auto=True` (Cloud TPU, SLURM) or `--config.distributed.coordinator_address=HOST:PORT
--config.distributed.num_processes=N --config.distributed.process_id=I` (or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID); see README "Training on a TPU pod / several hosts".
"""
from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import json
import sys
from pathlib import Path

from e4e_jax import cli_args
from e4e_jax.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UserError

PREFIX = "--config."
LOG_LEVELS = ("debug", "info", "warning")


class _OverrideParser(argparse.ArgumentParser):
    """Collects `--config.KEY[=VALUE]` tokens (argparse cannot declare options with a free suffix)."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        rest, overrides, i = [], [], 0
        while i < len(args):
            a = args[i]
            if a.startswith(PREFIX):
                key, eq, value = a[len(PREFIX):].partition("=")
                if not eq:
                    if i + 1 >= len(args):
                        self.error(f"{a} needs a value: {a}=VALUE")
                    value, i = args[i + 1], i + 1
                overrides.append((key, value))
            else:
                rest.append(a)
            i += 1
        ns, extra = super().parse_known_args(rest, namespace)
        ns.config_overrides = overrides
        return ns, extra


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("train", help=help_text, description=help_text + ". Checkpoints, metrics "
                       "(metrics.jsonl, TensorBoard where available), image grids and the final 'e4e' bundle "
                       "(WORKDIR/model) go to --workdir.", epilog="Any config field can be overridden with "
                       "--config.KEY=VALUE, e.g. --config.batch_size=16 --config.data.train_dir=/data/ffhq.")
    p.__class__ = _OverrideParser
    p.add_argument("--config", required=True,
                   help="config file defining get_config() (configs/ffhq.py, cars, horse, church, cats, tiny) "
                        "or a preset name")
    p.add_argument("--workdir", required=True, type=Path, help="output directory of the run")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from the latest checkpoint in --workdir")
    p.add_argument("--max-steps", type=cli_args.positive_int, default=None,
                   help="stop after this many total steps (default: config.max_steps)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="e4e-jax's own log messages; 'debug' adds, per process, the rows and files of every batch "
                        "it reads (default: info)")
    p.set_defaults(run=run)


def load_config(spec: str):
    """A config from a file with get_config() or a preset name of e4e_jax.training.presets."""
    from e4e_jax.training import presets

    path = Path(spec)
    if not path.suffix and spec in presets.PRESETS:
        return presets.PRESETS[spec]()
    if not path.is_file():
        raise ValueError(f"--config {spec}: no such file (and not a preset: {sorted(presets.PRESETS)})")
    mod_spec = importlib.util.spec_from_file_location(f"e4e_config_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config {spec}: the file defines no get_config()")
    return module.get_config()


def _parse_value(raw: str, current):
    if isinstance(current, str):
        return raw
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if current is None:
            return raw
        raise ValueError(f"cannot parse {raw!r} as a Python literal")
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def apply_overrides(config, overrides: list[tuple[str, str]]):
    """Set `a.b.c=value` fields of an ml_collections ConfigDict; unknown keys are errors naming close matches."""
    for key, raw in overrides:
        node, parts = config, key.split(".")
        for depth, part in enumerate(parts):
            fields = list(node.keys())
            if part not in fields:
                where = ".".join(parts[:depth]) or "config"
                close = difflib.get_close_matches(part, fields, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; fields: {', '.join(sorted(fields))}"
                raise ValueError(f"--config.{key}: {where} has no field {part!r}{hint}")
            if depth < len(parts) - 1:
                node = node[part]
        leaf = parts[-1]
        try:
            value = _parse_value(raw, node[leaf])
            if hasattr(node[leaf], "keys") and not isinstance(value, dict):
                fields = sorted(node[leaf].keys())
                raise ValueError(f"{key} is a group of fields ({', '.join(fields)}); set one "
                                 f"of them, e.g. --config.{key}.{fields[0]}=VALUE") from None
            node[leaf] = value
        except (ValueError, TypeError) as e:
            raise ValueError(f"--config.{key}={raw}: {e}") from e
    return config


def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("e4e_jax").setLevel(getattr(args, "log_level", "info").upper())
    try:
        config = apply_overrides(load_config(args.config), getattr(args, "config_overrides", []))
    except (ValueError, OSError, SyntaxError) as e:
        raise UserError(str(e)) from e
    from e4e_jax.training.loop import NonFiniteLossError, train_and_evaluate

    try:
        metrics = train_and_evaluate(config, args.workdir, resume=args.resume, max_steps=args.max_steps)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PARTIAL
    except (ValueError, FileNotFoundError) as e:  # e.g. a bundle or data folder named in the config
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return EXIT_OK
