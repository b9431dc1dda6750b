"""The training loop: exact kill-and-resume in a fresh process (through the CLI), NaN stops with the last
good checkpoint intact, metric/image writers without TensorFlow, config overrides of `e4e-jax train`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from e4e_jax import configs
from e4e_jax.commands import train as train_cmd
from e4e_jax.configs import ffhq_w
from e4e_jax.training import config_rules
from e4e_jax.training.loop import NonFiniteLossError, train_and_evaluate
from tests.training_helpers import small_config

ROOT = Path(__file__).resolve().parents[1]
RESUME_OVERRIDES = dict(max_steps=6, save_interval=3, val_interval=3, image_interval=2, board_interval=1)

CONFIG_FILE = """
from tests.training_helpers import small_config


def get_config():
    return small_config(**{overrides!r})
"""


def _state(workdir: Path, step: int):
    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")


def test_kill_and_resume_in_a_fresh_process_is_exact(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(CONFIG_FILE.format(overrides=RESUME_OVERRIDES))

    metrics = train_and_evaluate(small_config(**RESUME_OVERRIDES), full)  # 6 steps uninterrupted
    assert metrics["step"] == 6 and math.isfinite(metrics["train/loss"])
    train_and_evaluate(small_config(**RESUME_OVERRIDES), split, max_steps=3)  # 3 steps, checkpoint, "killed"

    # A fresh process continues the split run to step 6 through the command line.
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "e4e_jax.cli", "train", "--config", str(cfg_file), "--workdir", str(split)]
    out = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout[out.stdout.index("{") :])["step"] == 6

    a, b = _state(full, 6), _state(split, 6)
    leaves_a, leaves_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 20
    for (path, x), y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, jax.tree_util.keystr(path)
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # The run really moved: state 6 differs from state 3 (encoder, D, optimizer moments, pools, step).
    mid = _state(split, 3)
    assert int(np.asarray(a["step"])) == 6 and int(np.asarray(mid["step"])) == 3
    assert np.asarray(a["fake_pool"]["count"]) == 4
    moved = [
        np.max(np.abs(np.asarray(x) - np.asarray(y)))
        for x, y in zip(jax.tree.leaves(a["disc_params"]), jax.tree.leaves(mid["disc_params"]))
    ]
    assert max(moved) > 0

    # Metrics without TensorFlow: JSON lines continue across the restart; image grids are PNGs.
    rows = [json.loads(l) for l in (split / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "scalars" and "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert any("test/loss" in r for r in rows)
    assert list((split / "images").rglob("*.png"))
    assert (split / "final_metrics.json").is_file()

    # Re-running into a workdir with checkpoints, without --resume, is refused with a clear message.
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "--resume" in out.stderr


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = small_config(learning_rate=1e30, save_interval=1, max_steps=6, val_interval=1000)
    with pytest.raises(NonFiniteLossError) as err:
        train_and_evaluate(cfg, tmp_path)
    msg = str(err.value)
    assert "non-finite" in msg and "--resume" in msg
    failed = int(msg.split("at step ")[1].split(":")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and max(saved) < failed, (saved, failed)
    assert f"step {max(saved)}" in msg
    good = _state(tmp_path, max(saved))
    assert all(
        np.all(np.isfinite(np.asarray(x)))
        for x in jax.tree.leaves(good)
        if np.issubdtype(np.asarray(x).dtype, np.floating)
    )


# ----------------------------------------------------------------------------- CLI config handling


def test_config_overrides_parse_with_config_flags():
    c = train_cmd.load_config(
        "cars",
        [
            "--config.batch_size=16",
            "--config.learning_rate=3e-4",
            "--config.use_w_pool=false",
            "--config.data.train_dir=/data/cars",
            "--config.crop_rows=(0, 192)",
            "--config.data.image_size=[128, 128]",
            "--config.progressive_start",
            "100",
            "--config.lpips_bundle=123",
            "--config.generator.random_init={'size': 16}",
            "--config.seed",
            "-1",
        ],
    )
    assert c.batch_size == 16 and c.learning_rate == 3e-4 and c.use_w_pool is False
    assert c.data.train_dir == "/data/cars" and c.crop_rows == (0, 192) and c.data.image_size == (128, 128)
    assert c.progressive_start == 100 and c.seed == -1 and c.generator.random_init == {"size": 16}
    assert c.lpips_bundle == "123"  # string fields take the text as is
    assert c.dataset_type == "cars_encode"  # the fields not overridden keep the config's values
    with pytest.raises(ValueError, match="did you mean batch_size"):
        train_cmd.load_config("cars", ["--config.batch_sise=3"])
    with pytest.raises(ValueError, match=r"data has no field 'trian_dir'.*train_dir"):
        train_cmd.load_config("cars", ["--config.data.trian_dir=x"])
    with pytest.raises(ValueError, match="batch_size=abc"):
        train_cmd.load_config("cars", ["--config.batch_size=abc"])
    with pytest.raises(ValueError, match="boolean field takes '='"):
        train_cmd.load_config("cars", ["--config.use_w_pool", "false"])
    with pytest.raises(ValueError, match="no such file"):
        train_cmd.load_config("no_such_config.py")


def test_config_files_override_the_default():
    from e4e_jax.configs import default

    base = default.get_config().to_dict()
    for name in configs.NAMES:
        c = configs.get(name)
        assert set(c.to_dict()) == set(base), name  # every config has the default's fields, no others
        assert train_cmd.load_config(name).to_dict() == c.to_dict()
        assert train_cmd.load_config(str(ROOT / "configs" / f"{name}.py")).to_dict() == c.to_dict()
    assert configs.get("default").to_dict() == configs.get("ffhq").to_dict()
    assert configs.path("tiny").parent.name == "configs" and configs.path("tiny").parent.parent.name == "e4e_jax"


def test_train_command_parses_overrides_and_help(capsys):
    from e4e_jax import cli

    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "train",
            "--config",
            "configs/tiny.py",
            "--workdir",
            "w",
            "--config.batch_size=2",
            "--config.data.source",
            "synthetic",
            "--resume",
        ]
    )
    assert args.resume and args.config_flags == ["--config.batch_size=2", "--config.data.source", "synthetic"]
    assert train_cmd.load_config(str(ROOT / "configs" / "tiny.py"), args.config_flags).data.source == "synthetic"
    assert train_cmd.load_config("cars").crop_rows == (32, 224)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "--config.KEY=VALUE" in capsys.readouterr().out


def test_ablation_switches():
    for key, progressive, d_reg, adv, mode in [
        ("A", False, False, 0.0, "psp"),
        ("B", True, True, 0.0, "e4e"),
        ("C", False, False, 0.1, "e4e"),
        ("D", True, True, 0.1, "e4e"),
        ("W", False, False, 0.1, "w"),
    ]:
        c = configs.get("ffhq")
        c.ablation = key
        config_rules.apply_ablation(c)
        assert (c.use_progressive, c.use_delta_reg, c.w_discriminator_lambda, c.encoder.mode) == (
            progressive,
            d_reg,
            adv,
            mode,
        )

    w = ffhq_w.get_config()
    assert (w.use_progressive, w.use_delta_reg, w.w_discriminator_lambda, w.encoder.mode) == (False, False, 0.1, "w")
    assert train_cmd.load_config(str(ROOT / "configs" / "ffhq_w.py")).to_dict() == w.to_dict()


def test_w_mode_refuses_progressive_stages_and_delta_reg():
    from e4e_jax.training.config_rules import check_w_mode

    c = configs.get("ffhq")
    c.encoder.mode = "w"
    with pytest.raises(ValueError, match="use_progressive=False --config.use_delta_reg=False"):
        check_w_mode(c)
    check_w_mode(ffhq_w.get_config())
