"""Issue 30, group 4: a path option that leads through a loop of symbolic links, or whose name is not valid
UTF-8, is one error line at parse time (exit status 2), for every command's path options
(`cli_args.path`), before anything is read or made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e4e_jax.cli import main as cli_main
from tools.convert_weights.__main__ import main as convert_main

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # a Latin-1 name, as the shell passes it


def _parse_refused(capsys, call, argv: list[str]) -> str:
    """argparse's refusal: exit status 2 and one `... error: argument OPTION: ...` line, no traceback."""
    with pytest.raises(SystemExit) as e:
        call(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def loop(tmp_path) -> Path:
    """A link loop: a -> b -> a."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


def _argvs(bad: str, ok: Path) -> dict[str, list[str]]:
    """Every path option of every command, one at a time set to `bad`, the others to a harmless `ok` path."""
    o = str(ok)
    invert = ["invert", "--model", o, "--images", o, "--output", o]
    edit = ["edit", "--model", o, "--latents", o, "--output", o, "--strengths", "1"]
    synthesize = ["synthesize", "--model", o, "--latents", o, "--output", o]
    evaluate = ["evaluate", "--model", o, "--images", o, "--output", o]
    align = ["align", "--images", o, "--output", o]

    def with_bad(argv: list[str], option: str) -> list[str]:
        if option in argv:
            return [bad if argv[i - 1] == option else a for i, a in enumerate(argv)]
        return [*argv, option, bad]

    out = {}
    for argv, options in (
        (invert, ("--model", "--images", "--output", "--landmarks", "--compile-cache")),
        (align, ("--images", "--output", "--landmarks")),
        (edit + ["--sefa", "0"], ("--model", "--latents", "--output")),
        (edit, ("--interfacegan", "--ganspace")),
        (synthesize, ("--model", "--latents", "--output", "--png")),
        (evaluate, ("--model", "--images", "--inversions", "--output", "--lpips", "--inception", "--directions")),
        (evaluate, ("--ganspace",)),
        (["train", "--config", "tiny", "--workdir", o], ("--config", "--workdir")),
        (["quickstart", "--workdir", o], ("--workdir",)),
        (
            ["studio", "--model", o],
            ("--model", "--images", "--directions", "--lpips", "--landmarks", "--compile-cache"),
        ),
        (
            ["tune", "--model", o, "--lpips", o, "--inversions", o, "--output", o],
            ("--model", "--lpips", "--inversions", "--output", "--images"),
        ),
    ):
        for option in options:
            out[f"{argv[0]} {option}"] = with_bad(argv, option)
    return out


@pytest.mark.parametrize("option", list(_argvs("X", Path("Y"))))
def test_link_loops_are_refused(loop, tmp_path, capsys, option):
    line = _parse_refused(capsys, cli_main, _argvs(str(loop), tmp_path / "ok")[option])
    assert option.split()[1] in line and "loop of symbolic links" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # nothing made


@pytest.mark.parametrize("option", list(_argvs("X", Path("Y"))))
def test_names_that_are_not_utf8_are_refused(tmp_path, capsys, option):
    bad = os.path.join(os.fsdecode(tmp_path), NOT_UTF8)
    line = _parse_refused(capsys, cli_main, _argvs(bad, tmp_path / "ok")[option])
    assert option.split()[1] in line and "caf\\xe9 is not valid UTF-8" in line, line
    assert not list(tmp_path.iterdir())


def test_converter_paths(loop, tmp_path, capsys):
    assert "loop of symbolic links" in _parse_refused(capsys, convert_main, ["stylegan2", "g.pt", "--out", str(loop)])
    bad = os.path.join(os.fsdecode(tmp_path), NOT_UTF8)
    assert "not valid UTF-8" in _parse_refused(capsys, convert_main, ["stylegan2", "g.pt", "--out", bad])
    assert "loop of symbolic links" in _parse_refused(capsys, convert_main, ["stylegan2", str(loop), "--out", "o"])
