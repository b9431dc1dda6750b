"""`e4e-jax studio`'s command line: what it refuses before loading anything (one `error:` line, exit 2), its
defaults (127.0.0.1, 7860), and the quickstart's closing block naming a studio command that parses."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from e4e_jax.cli import build_parser
from e4e_jax.cli import main as cli_main
from e4e_jax.jobs import quickstart
from tests import tiny_bundles
from tests.tiny_bundles import error_line


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    return tiny_bundles.save_generator(tmp_path_factory.mktemp("studio_cmd") / "g")


def test_defaults_bind_this_machine_only():
    args = build_parser().parse_args(["studio", "--model", "m"])
    assert (args.host, args.port, args.images, args.directions, args.lpips) == ("127.0.0.1", 7860, None, None, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["studio", "--model", "m", "--port", "70000"])


def test_bad_arguments_are_one_line_before_anything_loads(g, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    np.save(tmp_path / "w.npy", tiny_bundles.latents(1))
    cases = [
        (["--model", str(tmp_path / "nope")], "nope"),
        (["--model", str(g), "--images", str(tmp_path / "file.txt")], "--images"),
        (["--model", str(g), "--directions", str(tmp_path / "missing")], "--directions"),
        (["--model", str(g), "--lpips", str(g)], "lpips"),
    ]
    for argv, words in cases:
        assert cli_main(["studio", *argv]) == 2, argv
        line = error_line(capsys)
        assert words in line, line


def test_a_generator_bundle_is_refused_by_the_editor(g, capsys):
    pytest.importorskip("gradio")  # the studio starts Gradio only after its checks; the Editor is built first
    assert cli_main(["studio", "--model", str(g)]) == 2
    assert "holds a 'stylegan2' bundle; the editor inverts with one of ['e4e', 'restyle']" in error_line(capsys)


def test_the_quickstart_names_a_studio_command_that_parses(tmp_path):
    block = quickstart.closing_block(tmp_path, 32, "source | inversion")
    line = next(ln.strip() for ln in block.splitlines() if ln.strip().startswith("e4e-jax studio"))
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert args.command == "studio" and args.model == "train/model"
