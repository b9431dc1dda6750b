"""The loss-curve PNG drawn from metrics.jsonl (issue 24, item 9): one panel per loss term, the training
values and the validation values in their colours, a falling loss drawn falling; flags and non-finite
values left out; a line cut by a kill does not stop it. (`e4e-jax train` writes it at the end of a run:
tests/test_train_resume_export.py compares the resumed run's with the uninterrupted run's.)"""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image

from e4e_jax.training import loss_curve

STEPS = 60


def _metrics(path):
    rows = [{"step": 0, "kind": "hparams", "hparams": {"config": "{}"}}]
    for s in range(1, STEPS + 1):
        rows.append(
            {
                "step": s,
                "kind": "scalars",
                "time": 1.0 * s,
                "train/loss": 2.0 - 1.5 * s / STEPS + 0.05 * math.sin(s),
                "train/loss_l2": 1.0 + 0.01 * s,
                "train/discriminator_r1_applied": float(s % 2),
                "train/grad_norm": 3.0,
                "train/steps_per_sec": 5.0,
            }
        )
        if s % 10 == 0:
            rows.append(
                {"step": s, "kind": "scalars", "time": 1.0 * s, "test/loss": 1.8 - s / 100, "test/loss_l2": math.nan}
            )
            rows.append({"step": s, "kind": "images", "name": "test/input_reconstruction", "count": 1})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 61, "kind": "scal')  # cut by a kill


def _pixels_of(img: np.ndarray, color) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(np.all(img == np.asarray(color, np.uint8), axis=-1))
    return ys, xs


def test_curves_are_read_per_term_without_flags_or_non_finite_values(tmp_path):
    _metrics(tmp_path / "metrics.jsonl")
    curves = loss_curve.read_curves(loss_curve._rows(tmp_path / "metrics.jsonl"))
    assert sorted(curves) == ["loss", "loss_l2"]  # not grad_norm, steps_per_sec or the r1 flag
    assert [s for s, _ in curves["loss"]["train"]] == list(range(1, STEPS + 1))
    assert [s for s, _ in curves["loss"]["test"]] == list(range(10, STEPS + 1, 10))
    assert curves["loss_l2"]["test"] == []  # NaN left out


def test_the_png_shows_a_falling_training_loss_and_the_validation_points(tmp_path):
    _metrics(tmp_path / "metrics.jsonl")
    png = loss_curve.write_loss_curve(tmp_path / "metrics.jsonl")
    assert png == tmp_path / loss_curve.FILE_NAME
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape == (loss_curve.HEADER_H + loss_curve.PANEL_H, 2 * loss_curve.PANEL_W, 3)  # two panels
    first = img[loss_curve.HEADER_H :, : loss_curve.PANEL_W]  # "loss" comes first
    ys, xs = _pixels_of(first, loss_curve.TRAIN_SMOOTH)
    assert xs.size > 100
    left, right = ys[xs < xs.min() + 10].mean(), ys[xs > xs.max() - 10].mean()
    assert left < right - 50, (left, right)  # falling: the left end is drawn higher up (smaller y)
    assert _pixels_of(first, loss_curve.TRAIN_RAW)[0].size > 50  # the raw values under the average
    assert _pixels_of(first, loss_curve.VALIDATION)[0].size > 30
    second = img[loss_curve.HEADER_H :, loss_curve.PANEL_W :]
    assert _pixels_of(second, loss_curve.VALIDATION)[0].size == 0  # loss_l2 has no finite validation value


def test_nothing_is_written_without_loss_values(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "kind": "hparams", "hparams": {}}) + "\n")
    assert loss_curve.write_loss_curve(path) is None
    assert not (tmp_path / loss_curve.FILE_NAME).exists()
