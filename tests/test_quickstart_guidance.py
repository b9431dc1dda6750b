"""What a newcomer meets around the quickstart (issue 24, items 7, 8 and 11): `--model` given a training or
quickstart work directory says where its model is (in the one bundle-loading place, so every command
does), the closing block names the model and the commands to run on it, `e4e-jax --version`, and
argument values the machine cannot hold or the generators cannot take are one `error:` line."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e4e_jax import __version__
from e4e_jax.cli import build_parser
from e4e_jax.cli import main as cli_main
from e4e_jax.jobs import quickstart
from e4e_jax.storage import manifest
from tests import tiny_bundles
from tests.tiny_bundles import error_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("guidance")
    tiny_bundles.save_generator(root / "g")  # what a work directory's model/ holds does not matter here
    np.save(root / "w.npy", tiny_bundles.latents(1))
    (root / "photos").mkdir()
    return root


def _train_workdir(root: Path, bundles: Path, finished: bool) -> Path:
    """A work directory as `e4e-jax train` leaves it: its training config.json (no bundle kind), the
    metrics log, and (when finished) the bundle in model/."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"batch_size": 4, "max_steps": 10}))
    (root / manifest.TRAINING_LOG).write_text('{"step": 1, "train/loss": 1.0}\n')
    if finished:
        shutil.copytree(bundles / "g", root / manifest.TRAIN_MODEL_DIR)
    return root


def _commands(bundles: Path, model: Path, out: Path) -> list[list[str]]:
    m = str(model)
    return [
        ["synthesize", "--model", m, "--latents", str(bundles / "w.npy"), "--output", str(out / "s.npy")],
        [
            "edit",
            "--model",
            m,
            "--latents",
            str(bundles / "w.npy"),
            "--output",
            str(out / "e"),
            "--sefa",
            "0",
            "--strengths",
            "1",
        ],
        ["invert", "--model", m, "--images", str(bundles / "photos"), "--output", str(out / "i")],
        ["evaluate", "--model", m, "--images", str(bundles / "photos"), "--output", str(out / "m")],
    ]


def test_model_given_a_work_directory_names_its_bundle(bundles, tmp_path, capsys):
    train = _train_workdir(tmp_path / "run", bundles, finished=True)
    quick = tmp_path / "qs"
    _train_workdir(quick / manifest.QUICKSTART_TRAIN_DIR, bundles, finished=True)
    cases = [
        (train, f"is an `e4e-jax train` work directory, not a model bundle; its trained model is {train / 'model'}"),
        (
            quick,
            f"is an `e4e-jax quickstart` work directory, not a model bundle; its trained model is {quick / 'train' / 'model'}",
        ),
        (quick / "train", f"its trained model is {quick / 'train' / 'model'}: pass --model"),
    ]
    for model, expected in cases:
        for argv in _commands(bundles, model, tmp_path):
            assert cli_main(argv) == 2, argv
            line = error_line(capsys)
            assert expected in line, (argv[0], line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qs", "run"]  # nothing written


def test_model_given_an_unfinished_work_directory_says_so(bundles, tmp_path, capsys):
    train = _train_workdir(tmp_path / "run", bundles, finished=False)
    assert cli_main(_commands(bundles, train, tmp_path)[0]) == 2
    line = error_line(capsys)
    assert "whose training has not finished" in line and str(train / "model") in line and "--resume" in line, line


def test_closing_block_names_the_model_what_it_is_and_the_next_commands(tmp_path):
    work = tmp_path / "my work"
    text = quickstart.closing_block(work, 32, "source | inversion | SeFa 0 -6")
    flat = " ".join(text.split())  # the explanation is wrapped for a terminal
    assert "a toy: a 32x32 StyleGAN2" in flat and "colour blobs" in flat and "official checkpoints" in flat
    assert f"In {work}:" in text and "  model      train/model   " in text
    assert "  grid       quickstart_grid.png   columns: source | inversion | SeFa 0 -6" in text
    lines = [line.strip() for line in text.splitlines()]
    assert f"cd {shlex.quote(str(work))}" in lines
    commands = [line for line in lines if line.startswith("e4e-jax ")]
    assert [shlex.split(c)[1] for c in commands] == ["invert", "edit", "evaluate", "studio"]
    parser = build_parser()
    for c in commands[:3]:  # each parses as written (studio is being built on another branch)
        assert parser.parse_args(shlex.split(c)[1:]).model == "train/model"
    assert "loss curve" not in text
    (work / "train").mkdir(parents=True)
    (work / "train" / manifest.LOSS_CURVE).write_bytes(b"png")
    assert f"  loss curve train/{manifest.LOSS_CURVE}" in quickstart.closing_block(work, 32, "")


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "e4e_jax.cli", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == f"e4e-jax {__version__}"


def test_sizes_the_machine_cannot_hold_are_refused(tmp_path, capsys):
    work = tmp_path / "qs"
    assert cli_main(["quickstart", "--workdir", str(work), "--heldout", "100000000"]) == 2
    line = error_line(capsys)
    assert "--heldout 100000000" in line and "of memory" in line and "smaller --heldout" in line, line
    assert not work.exists()


@pytest.mark.parametrize("seed", ["-1", "4294967296", "x"])
def test_seeds_are_checked_at_parse_time(seed):
    for argv in (
        ["evaluate", "--model", "m", "--images", "i", "--output", "o", "--seed", seed],
        ["synthesize", "--model", "m", "--latents", "w.npy", "--output", "o.npy", "--seed", seed],
    ):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(argv)
        assert e.value.code == 2
