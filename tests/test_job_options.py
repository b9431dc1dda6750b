"""e4e_jax/options.py + commands/cli_args.add_options/options_from_args: a job's options dataclass is the one
declaration of its command-line options and of its resume plan's keys."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Optional

import pytest

from e4e_jax import options
from e4e_jax.commands import job_options
from e4e_jax.jobs.invert import plan as plan_lib
from e4e_jax.jobs.invert.options import InvertOptions
from e4e_jax.options import option


@dataclasses.dataclass(frozen=True)
class _Toy:
    source: Path = option(type="path", plan=True, help="where from")
    count: int = option(3, type="positive_int", plan=True, help="how many")
    quality: int = option(75, type=("int_in", 1, 100), help="how good")
    mode: str = option("a", choices=("a", "b"), plan=True, help="which way")
    loud: bool = option(False, help="say more")
    cache: Optional[str] = option(None, metavar="DIR", group="cache", help="keep here")
    no_cache: bool = option(False, group="cache", help="keep nothing")
    internal: int = 0  # not an option


def _parser(cls) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    job_options.add_options(p, cls)
    return p


def test_parser_from_dataclass_declares_each_field_once():
    p = _parser(_Toy)
    flags = [a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"]
    assert flags == ["--source", "--count", "--quality", "--mode", "--loud", "--cache", "--no-cache"]
    text = p.format_help()
    assert "[--cache DIR | --no-cache]" in text
    for f in options.option_fields(_Toy):
        assert f.metadata["option"]["help"] in text
    assert "internal" not in text
    with pytest.raises(SystemExit):  # --source has no default: required
        p.parse_args([])
    with pytest.raises(SystemExit):  # the value types of cli_args apply
        p.parse_args(["--source", "x", "--count", "0"])
    with pytest.raises(SystemExit):
        p.parse_args(["--source", "x", "--quality", "101"])
    with pytest.raises(SystemExit):  # mutually exclusive group
        p.parse_args(["--source", "x", "--cache", "d", "--no-cache"])


def test_round_trip_args_to_options():
    args = _parser(_Toy).parse_args(["--source", "in", "--mode", "b", "--loud", "--cache", "d"])
    got = job_options.options_from_args(_Toy, args, internal=5)
    assert got == _Toy(source=Path("in"), count=3, quality=75, mode="b", loud=True, cache="d", internal=5)
    assert job_options.options_from_args(_Toy, _parser(_Toy).parse_args(["--source", "in"])) == _Toy(Path("in"))


def test_plan_keys_derived_from_metadata():
    assert options.plan_keys(_Toy) == ("source", "count", "mode")
    invert_plan = set(options.plan_keys(InvertOptions))
    assert invert_plan <= set(plan_lib.PLAN_KEYS)
    assert set(plan_lib.PLAN_KEYS) - invert_plan == set(plan_lib.PLAN_FACTS)
    assert {"output", "resume", "overwrite", "workers", "quiet"}.isdisjoint(plan_lib.PLAN_KEYS)


def test_invert_options_round_trip(tmp_path):
    argv = ["--model", "m", "--images", str(tmp_path), "--output", str(tmp_path / "o"), "--no-images"]
    argv += ["--no-compile-cache", "--num-processes", "2", "--auto-distributed"]
    p = _parser(InvertOptions)
    opts = job_options.options_from_args(InvertOptions, p.parse_args(argv))
    assert opts.image_format is None and opts.compile_cache == ""  # the off switches' meaning
    assert opts.images == tmp_path and opts.batch_size == 8
    assert opts.distributed() == {"coordinator_address": None, "num_processes": 2, "process_id": None, "auto": True}
    defaults = job_options.options_from_args(InvertOptions, p.parse_args(argv[:6]))
    assert defaults == InvertOptions(model="m", images=tmp_path, output=tmp_path / "o")


def test_tune_plan_keys_derived_from_metadata():
    from e4e_jax.jobs import tune
    from e4e_jax.jobs.tune_options import TuneOptions

    assert tune.PLAN_KEYS == options.plan_keys(TuneOptions) + tune.PLAN_FACTS
    assert {"steps", "locality", "output", "resume", "quiet"}.isdisjoint(tune.PLAN_KEYS)  # "pti" holds the first two


def test_flag_action_and_cli_default(tmp_path):
    from e4e_jax.commands import evaluate
    from e4e_jax.jobs.evaluate_options import EvaluateOptions

    p = _parser(EvaluateOptions)
    argv = ["--model", "m", "--output", str(tmp_path), "--ganspace-edit", "0,0,5,-2", "--ganspace-edit", "1,2,3,4"]
    args = p.parse_args([*argv, "--directions", "a.pt", "b.pt"])
    assert args.ganspace_edits == ["0,0,5,-2", "1,2,3,4"] and args.directions == [Path("a.pt"), Path("b.pt")]
    edits = tuple(map(evaluate.parse_ganspace_edit, args.ganspace_edits))
    opts = job_options.options_from_args(EvaluateOptions, args, directions=tuple(args.directions), ganspace_edits=edits)
    assert opts.ganspace_edits == ((0, 0, 5, -2.0), (1, 2, 3, 4.0)) and opts.directions == (Path("a.pt"), Path("b.pt"))
    bare = p.parse_args(argv[:4])
    assert bare.ganspace_edits == [] and bare.directions == []  # a fresh list each parse: nothing carried over
