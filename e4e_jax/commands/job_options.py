"""A job's options dataclass (e4e_jax/options.py: one field per option, carrying its help, type and
choices) as argparse options, and the parsed arguments back as that dataclass:

    add_options(parser, InvertOptions)                     # in a command's add_parser
    opts = options_from_args(InvertOptions, args)          # in its run
"""

from __future__ import annotations

import argparse
import dataclasses

from e4e_jax import options
from e4e_jax.commands import cli_args


def _value_type(spec):
    """A options type spec -> the parser of cli_args it names ("positive_int", ("int_in", 1, 100))."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        return getattr(cli_args, spec)
    name, *factory_args = spec
    return getattr(cli_args, name)(*factory_args)


def add_options(parser: argparse.ArgumentParser, options_cls) -> None:
    """Add one argparse option per `options.option` field of `options_cls`, in declaration order."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in options.option_fields(options_cls):
        meta = f.metadata["option"]
        target = parser
        if meta["group"] is not None:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group(required=meta["group_required"])
            target = groups[meta["group"]]
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        if f.default is False:
            target.add_argument(flag, action="store_true", help=meta["help"])
            continue
        kw: dict = {"help": meta["help"], "dest": f.name}
        if f.default is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = f.default if meta["cli_default"] is None else meta["cli_default"]
        for key, value in (("type", _value_type(meta["type"])), ("choices", meta["choices"])):
            if value is not None:
                kw[key] = value
        for key in ("metavar", "nargs", "action"):
            if meta[key] is not None:
                kw[key] = meta[key]
        target.add_argument(flag, **kw)


def options_from_args(options_cls, args: argparse.Namespace, **overrides):
    """The `options_cls` instance of parsed `args` (its option fields), with `overrides` on top."""
    values = {f.name: getattr(args, f.name) for f in options.option_fields(options_cls)}
    return options_cls(**{**values, **overrides})
