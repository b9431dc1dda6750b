"""`e4e-jax train` on bad input and unlucky timing (issue 16): bad config values refused before any work,
one writer per work directory (the lock), a --resume whose config does not fit the checkpoint names
the differing fields, a --resume already past --max-steps says nothing was trained and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e4e_jax import cli, errors
from e4e_jax.storage import outdir

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2
LOCK_WAIT_S = 120  # the CLI run takes its lock after start-up (imports): seconds, not minutes
RUN_TIMEOUT_S = 600

CONFIG_FILE = """
from tests.training_helpers import small_config


def get_config():
    return small_config(max_steps={steps}, save_interval=1, val_interval=1000)
"""


def _train(capsys, *argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of `e4e-jax train ARGV` run in this process."""
    capsys.readouterr()
    code = cli.main(["train", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished STEPS-step run (checkpoints 1..STEPS) by the CLI in a subprocess; while it runs, its
    work directory is locked against any other writer."""
    root = tmp_path_factory.mktemp("guards")
    cfg = root / "cfg.py"
    cfg.write_text(CONFIG_FILE.format(steps=STEPS))
    work = root / "work"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "e4e_jax.cli", "train", "--config", str(cfg), "--workdir", str(work)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while not (work / outdir.LOCK_NAME).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(outdir.LockedError, match="e4e-jax train"):
            with outdir.lock(work):
                pass
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert not (work / outdir.LOCK_NAME).exists()  # released at the end
    return cfg, work


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.save_interval=0", "config.save_interval=0: must be a whole number ≥ 1"),
        ("--config.batch_size=-2", "config.batch_size=-2: must be a whole number ≥ 1"),
        ("--config.learning_rate=1e999", "config.learning_rate=inf: must be a finite number > 0"),
        ("--config.max_val_batches=0", "config.max_val_batches=0: must be -1 (the whole test set) or ≥ 1"),
        ("--config.data.image_size=(0,32)", "config.data.image_size=(0, 32): must be (height, width)"),
        ("--config.data.loader=tf", "config.data.loader='tf': must be one of 'auto', 'tfds', 'numpy'"),
    ],
)
def test_bad_config_values_are_refused_before_any_work(tmp_path, capsys, override, message):
    work = tmp_path / "w"
    code, err = _train(capsys, "--config", "configs/tiny.py", "--workdir", str(work), override)
    assert code == errors.EXIT_USAGE and len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not work.exists()


def test_config_paths_and_generator_choice_are_checked_before_any_work(tmp_path, capsys):
    work = tmp_path / "w"
    missing = tmp_path / "no_such_images"
    code, err = _train(
        capsys,
        *("--config", "configs/tiny.py", "--workdir", str(work)),
        *("--config.data.source=folder", f"--config.data.train_dir={missing}"),
    )
    assert code == errors.EXIT_USAGE and err == [
        f"error: config.data.train_dir='{missing}': no such folder; pass the folder of training images"
    ], err
    code, err = _train(
        capsys, "--config", "configs/tiny.py", "--workdir", str(work), f"--config.generator.bundle={missing}"
    )
    assert code == errors.EXIT_USAGE and "both set" in err[0] and "random_init='{}'" in err[0], err
    assert not work.exists()
    # The way out the message names: random_init emptied, the bundle is used (and, missing here, named).
    code, err = _train(
        capsys,
        *("--config", "configs/tiny.py", "--workdir", str(work)),
        *(f"--config.generator.bundle={missing}", "--config.generator.random_init={}"),
    )
    assert code == errors.EXIT_USAGE and str(missing) in err[-1] and "both set" not in err[-1], err


def test_every_bad_value_gets_its_own_line_and_bad_flags_fail_at_parse_time(tmp_path, capsys):
    work = tmp_path / "w"
    code, err = _train(
        capsys,
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(work),
        "--config.save_interval=0",
        "--config.val_interval=-1",
    )
    assert code == errors.EXIT_USAGE and len(err) == 2, err
    fields = sorted(line.removeprefix("error: ").split(":")[0] for line in err)
    assert fields == ["config.save_interval=0", "config.val_interval=-1"], err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--config", "configs/tiny.py", "--workdir", str(work), "--max-steps", "0"])
    assert e.value.code == errors.EXIT_USAGE and "--max-steps" in capsys.readouterr().err
    assert not work.exists()


def test_second_writer_is_refused(trained, capsys):
    cfg, work = trained
    before = sorted(p.name for p in work.iterdir())
    with outdir.lock(work, command="another run"):
        code, err = _train(capsys, "--config", str(cfg), "--workdir", str(work), "--resume", "--max-steps", "3")
    assert code == errors.EXIT_USAGE and len(err) == 1 and "in use by" in err[0] and "another run" in err[0], err
    assert sorted(p.name for p in work.iterdir()) == before


def test_resume_with_another_config_names_the_fields_that_differ(trained, capsys):
    cfg, work = trained
    code, err = _train(
        capsys,
        "--config",
        str(cfg),
        "--workdir",
        str(work),
        "--resume",
        "--max-steps",
        "3",
        "--config.w_pool_size=8",
        "--config.learning_rate=0.5",
    )
    assert code == errors.EXIT_USAGE, err
    assert err[0].startswith(f"error: --resume: the checkpoint at step {STEPS}") and "fields that differ" in err[0]
    # One line per differing field, nothing of orbax's own report; run-steering fields (max_steps) not listed.
    assert err[1:-1] == ["  learning_rate: checkpoint 0.001, now 0.5", "  w_pool_size: checkpoint 4, now 8"], err
    assert "config.json" in err[-1] and len(err) == 4
    assert sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())[-1] == STEPS


@pytest.mark.parametrize("max_steps, says", [(1, "past"), (STEPS, "already at")])
def test_resume_past_max_steps_says_nothing_was_trained(trained, capsys, max_steps, says):
    cfg, work = trained
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*")}
    code, err = _train(capsys, "--config", str(cfg), "--workdir", str(work), "--resume", "--max-steps", str(max_steps))
    assert code == errors.EXIT_NOTHING and len(err) == 1, err
    assert err[0].startswith("error: nothing trained") and f"step {STEPS}, {says}" in err[0], err
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*")} == before  # nothing written, nothing exported
