"""Declaring a job's options once: each field of a job's frozen options dataclass carries its command-line
help, value type and choices, and whether it is part of the job's resume plan, in `dataclasses.field`'s
metadata (`option(...)`). `commands/job_options.add_options` derives the argparse options from it and
`options_from_args` builds the dataclass back; `plan_keys` lists the fields a `--resume` must match.

Field name `batch_size` is the flag `--batch-size`; a bool field defaulting to False is a switch; a field
without a default is a required option. `type` names a value parser of commands/cli_args (this layer sits
below the commands): "positive_int", or a factory and its arguments, ("int_in", 1, 100).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

TypeSpec = Union[None, str, tuple]


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    type: TypeSpec = None,
    choices: Optional[tuple] = None,
    metavar: Optional[str] = None,
    nargs: Optional[str] = None,
    flag: Optional[str] = None,
    action: Optional[str] = None,
    cli_default: Any = None,
    group: Optional[str] = None,
    group_required: bool = False,
    plan: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option. `group`: options sharing it are mutually
    exclusive (`group_required`: one of them must be given); `plan`: the value is part of the resume plan
    (a `--resume` with another value is refused). `flag`: when not the field's name; `action`, `nargs`:
    argparse's; `cli_default`: the parser's default where it differs from the field's (a list for
    nargs/append, where the field holds a tuple: the command converts the parsed value)."""
    meta = {"help": help, "type": type, "choices": choices, "metavar": metavar, "nargs": nargs, "action": action}
    meta |= {"flag": flag, "cli_default": cli_default}
    meta |= {"group": group, "group_required": group_required, "plan": plan}
    return dataclasses.field(default=default, metadata={"option": meta})


def option_fields(options_cls) -> list[dataclasses.Field]:
    """The fields of `options_cls` declared with `option`, in declaration order (the --help order)."""
    return [f for f in dataclasses.fields(options_cls) if "option" in f.metadata]


def plan_keys(options_cls) -> tuple[str, ...]:
    """The names of the fields declared with `plan=True`, in declaration order."""
    return tuple(f.name for f in option_fields(options_cls) if f.metadata["option"]["plan"])
