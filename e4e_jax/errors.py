"""The project's error type for bad input, and the exit codes of every command.

Commands raise `UserError` (or a subclass, e.g. `bundle.BundleError`) for anything the user can fix:
a wrong file, a bad value, an output folder in use. The CLI boundary (`e4e_jax.cli.main`) prints it as
one line, `error: ...`, and exits with its `exit_code`; every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

EXIT_OK = 0  # everything done
EXIT_NOTHING = 1  # the command ran but produced nothing (e.g. no image could be inverted); also: no usable
# input at all (an empty input folder, or one whose images all fail to decode: `NoInputError`)
EXIT_USAGE = 2  # bad arguments, bad input file or model, output folder in use; nothing written
EXIT_PARTIAL = 3  # partial success: some inputs skipped, each with its reason in the report; train:
# stopped by a non-finite loss, the checkpoints before it kept
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (SIGINT, the shell's 128 + 2); what was committed is kept


class UserError(Exception):
    """A problem with the user's input or environment, stated as one sentence that names the file or
    argument and the fix."""

    exit_code = EXIT_USAGE


class NoInputError(UserError):
    """An input folder holds nothing usable: no image files, or none that decodes. The same exit code (1,
    EXIT_NOTHING) in every command that reads a folder of images (train, invert, align, evaluate): there was
    nothing to work on, so nothing was produced."""

    exit_code = EXIT_NOTHING


def install_hint(extra: str) -> str:
    """The pip command that adds the optional dependencies `extra` (e.g. 'align') to this copy of e4e-jax:
    in a source checkout (setup.py beside the package: a clone, or its editable install) `pip install -e
    '.[extra]'` run there; else `pip install 'e4e-jax[extra]'`, which keeps the installed package and adds
    what the extra needs."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if (root / "setup.py").is_file() and (root / "e4e_jax").is_dir():
        return f"pip install -e '.[{extra}]' (in {root})"
    return f"pip install 'e4e-jax[{extra}]'"
