"""`e4e-jax train`: train an e4e encoder from an ml_collections config file.

    e4e-jax train --config configs/ffhq.py --workdir runs/ffhq \\
        --config.data.train_dir=/data/ffhq --config.generator.bundle=models/stylegan2-ffhq \\
        --config.lpips_bundle=models/lpips-alex --config.id_bundle=models/arcface [--resume]

`--config` takes a config file (its get_config()) or the name of one in e4e_jax/configs/ (ffhq, cars, ...).
`--config.KEY=VALUE` (or `--config.KEY VALUE`) overrides any field through ml_collections' config_flags (the
flax examples' parser): VALUE is read as the field's type (numbers, True/False, tuples such as `(32,224)`,
Python dicts), text as it is for string fields; a boolean takes `=` (`--config.use_w_pool=false`).
Several processes (TPU pods, several hosts): the same command on every host, with
`--config.distributed.auto=True` (Cloud TPU, SLURM) or `--config.distributed.coordinator_address=HOST:PORT
--config.distributed.num_processes=N --config.distributed.process_id=I` (or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID); see README "Training on a TPU pod / several hosts".
"""

from __future__ import annotations

import argparse
import sys

from e4e_jax.commands import cli_args
from e4e_jax.errors import UserError
from e4e_jax.jobs.train import PREFIXES, load_config  # no JAX at import: the parser stays fast

LOG_LEVELS = ("debug", "info", "warning")


class _OverrideParser(argparse.ArgumentParser):
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


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser(
        "train",
        help=help_text,
        description=help_text + ". Checkpoints, metrics "
        "(metrics.jsonl, TensorBoard where available), image grids and the final 'e4e' bundle "
        "(WORKDIR/model) go to --workdir.",
        epilog="Any config field can be overridden with "
        "--config.KEY=VALUE, e.g. --config.batch_size=16 --config.data.train_dir=/data/ffhq "
        "(parsed by ml_collections' config_flags in the field's type; a boolean takes '=': "
        "--config.use_w_pool=false).",
    )
    p.__class__ = _OverrideParser
    p.add_argument(
        "--config",
        required=True,
        type=cli_args.path_text,
        help="config file defining get_config() (configs/ffhq.py) or the name of one in e4e_jax/configs/ "
        "(default, ffhq, ffhq_w, cars, horse, church, cats, tiny)",
    )
    p.add_argument("--workdir", required=True, type=cli_args.path, help="output directory of the run")
    p.add_argument("--resume", action="store_true", help="continue exactly from the latest checkpoint in --workdir")
    p.add_argument(
        "--max-steps",
        type=cli_args.positive_int,
        default=None,
        help="stop after this many total steps (default: config.max_steps)",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="e4e-jax's own log messages; 'debug' adds, per process, the rows and files of every batch "
        "it reads (default: info)",
    )
    p.set_defaults(
        run=run, on_interrupt="the checkpoints written so far are kept: continue with the same command and --resume"
    )


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs import train

    train.configure_logging(getattr(args, "log_level", "info"))
    try:
        config = load_config(args.config, getattr(args, "config_flags", []))
    except (ValueError, OSError, SyntaxError) as e:
        raise UserError(str(e)) from e
    return train.train(config, args.workdir, resume=args.resume, max_steps=args.max_steps)
