"""The `e4e-jax` dispatcher: every command is listed, and building the parser imports no JAX (cli.py's
promise that --help and argument errors answer without JAX's start-up)."""

import subprocess
import sys

from e4e_jax import cli


def test_every_command_has_a_parser():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(cli.COMMANDS)


def test_building_the_parser_imports_no_jax():
    code = (
        "import sys; from e4e_jax import cli; cli.build_parser(); "
        "print(sorted(m for m in ('jax', 'flax', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
