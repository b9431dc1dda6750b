"""Loss curves as a PNG, drawn from a run's metrics.jsonl (training/writers.py) with PIL alone: no
TensorBoard, no matplotlib. `e4e-jax train` writes WORKDIR/loss_curve.png at the end of a run; anything
else that runs training (the quickstart) can call `write_loss_curve` on the same file.

One small panel per loss term (each on its own scale: the terms differ by orders of magnitude): the
training values as a thin light line with an exponential moving average over them (TensorBoard's
smoothing; a short run's few values are drawn as they are), the validation values as a darker line with dots. Axis labels give the step range and the
value range of each panel.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from e4e_jax.storage import fileio

FILE_NAME = "loss_curve.png"
MAX_PANELS = 12  # the most loss terms drawn (the total loss first, then the others by name)
COLUMNS = 3
PANEL_W, PANEL_H = 380, 230
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 14, 26, 30  # inside a panel: room for labels
HEADER_H = 48
FONT_SIZE = 13
SMOOTHING = 0.6  # EMA weight of the smoothed training line (TensorBoard's default)
SMOOTH_MIN_POINTS = 20  # fewer training values are drawn as they are: an average over a handful only lags
BACKGROUND, AXES, GRID, TEXT = (255, 255, 255), (90, 90, 90), (228, 228, 228), (30, 30, 30)
TRAIN_RAW, TRAIN_SMOOTH, VALIDATION = (170, 200, 235), (31, 90, 180), (220, 110, 20)
GAP_FLOOR = 1e-12  # window_gaps: a reference window mean of 0 is compared absolutely
# Scalars that are not loss values although their names say loss: 0/1 flags of a lazily applied term.
NOT_CURVES = ("discriminator_r1_applied",)

Series = list[tuple[int, float]]


def read_curves(rows: Iterable[dict]) -> dict[str, dict[str, Series]]:
    """{term: {'train': [(step, value)], 'test': [...]}} of the loss scalars in metrics.jsonl rows
    (`train/<term>` and `test/<term>` whose term names a loss); non-finite values are left out."""
    curves: dict[str, dict[str, Series]] = {}
    for row in rows:
        if row.get("kind") != "scalars":
            continue
        for key, value in row.items():
            split, _, term = key.partition("/")
            if split not in ("train", "test") or "loss" not in term or term in NOT_CURVES:
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(term, {"train": [], "test": []})[split].append((int(row["step"]), float(value)))
    return curves


def _rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by a kill: the rest of the file is still good
            continue
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("step"), int)]


def _order(terms: Iterable[str]) -> list[str]:
    return sorted(terms, key=lambda t: (t != "loss", t))[:MAX_PANELS]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def window_means(values: Sequence[float], window: int) -> list[float]:
    """Means of consecutive `window`-value windows of a curve (a last partial window is dropped)."""
    n = len(values) // window
    return [sum(values[k * window : (k + 1) * window]) / window for k in range(n)]


def window_gaps(reference: Sequence[float], other: Sequence[float], window: int) -> list[float]:
    """|mean_k(other) − mean_k(reference)| / |mean_k(reference)| for each `window`-step window k of two
    curves of the same steps: how far one run's smoothed curve is from another's (e.g. bf16 vs float32)."""
    if len(reference) != len(other):
        raise ValueError(f"curves of different lengths: {len(reference)} and {len(other)} values")
    pairs = zip(window_means(reference, window), window_means(other, window))
    return [abs(b - a) / max(abs(a), GAP_FLOOR) for a, b in pairs]


def _smooth(values: list[float]) -> list[float]:
    out, last = [], values[0]
    for v in values:
        last = SMOOTHING * last + (1.0 - SMOOTHING) * v
        out.append(last)
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"


def _panel(draw: ImageDraw.ImageDraw, x0: int, y0: int, term: str, series: dict[str, Series], font) -> None:
    """One term's curves in the panel whose top-left corner is (x0, y0)."""
    points = series["train"] + series["test"]
    steps, values = [s for s, _ in points], [v for _, v in points]
    lo_s, hi_s = min(steps), max(steps)
    lo_v, hi_v = min(values), max(values)
    if hi_v - lo_v < 1e-12 * max(1.0, abs(hi_v)):
        lo_v, hi_v = lo_v - max(abs(lo_v) * 0.05, 1e-3), hi_v + max(abs(hi_v) * 0.05, 1e-3)
    left, top = x0 + MARGIN_L, y0 + MARGIN_T
    right, bottom = x0 + PANEL_W - MARGIN_R, y0 + PANEL_H - MARGIN_B

    def xy(step: int, value: float) -> tuple[float, float]:
        fx = 0.5 if hi_s == lo_s else (step - lo_s) / (hi_s - lo_s)
        return left + fx * (right - left), bottom - (value - lo_v) / (hi_v - lo_v) * (bottom - top)

    for k in range(5):  # horizontal grid lines, the outer two labelled
        y = top + k * (bottom - top) / 4
        draw.line([(left, y), (right, y)], fill=GRID)
    draw.rectangle([left, top, right, bottom], outline=AXES)
    draw.text((x0 + 6, y0 + 5), term, fill=TEXT, font=font)
    draw.text((left - 4, top), _fmt(hi_v), fill=TEXT, font=font, anchor="ra")
    draw.text((left - 4, bottom), _fmt(lo_v), fill=TEXT, font=font, anchor="rd")
    draw.text((left, bottom + 4), str(lo_s), fill=TEXT, font=font, anchor="la")
    draw.text((right, bottom + 4), f"step {hi_s}", fill=TEXT, font=font, anchor="ra")
    train = sorted(series["train"])
    if train:
        raw = [xy(s, v) for s, v in train]
        if len(raw) >= SMOOTH_MIN_POINTS:
            draw.line(raw, fill=TRAIN_RAW, width=1)
            draw.line(
                [xy(s, v) for (s, _), v in zip(train, _smooth([v for _, v in train]))], fill=TRAIN_SMOOTH, width=2
            )
        elif len(raw) > 1:
            draw.line(raw, fill=TRAIN_SMOOTH, width=2)
        else:
            _dot(draw, raw[0], TRAIN_SMOOTH)
    test = [xy(s, v) for s, v in sorted(series["test"])]
    if len(test) > 1:
        draw.line(test, fill=VALIDATION, width=2)
    for p in test:
        _dot(draw, p, VALIDATION)


def _dot(draw: ImageDraw.ImageDraw, p: tuple[float, float], color) -> None:
    draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=color)


def _header(draw: ImageDraw.ImageDraw, title: str, width: int, font) -> None:
    draw.text((10, 8), title, fill=TEXT, font=font)
    x, y = 10, 28
    for label, color in (("training", TRAIN_RAW), ("training, smoothed", TRAIN_SMOOTH), ("validation", VALIDATION)):
        draw.line([(x, y + 7), (x + 22, y + 7)], fill=color, width=3)
        draw.text((x + 28, y), label, fill=TEXT, font=font)
        x += 40 + int(draw.textlength(label, font=font))
        if x > width - 120:
            break


def render(curves: dict[str, dict[str, Series]], title: str) -> Image.Image:
    """An RGB image of the curves (read_curves' dict): a header with the legend, then one panel per term."""
    terms = _order(t for t, s in curves.items() if s["train"] or s["test"])
    if not terms:
        raise ValueError("no loss values to draw")
    cols = min(COLUMNS, len(terms))
    rows = math.ceil(len(terms) / cols)
    img = Image.new("RGB", (cols * PANEL_W, HEADER_H + rows * PANEL_H), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(FONT_SIZE)
    _header(draw, title, img.width, font)
    for k, term in enumerate(terms):
        _panel(draw, (k % cols) * PANEL_W, HEADER_H + (k // cols) * PANEL_H, term, curves[term], font)
    return img


def write_loss_curve(
    metrics_jsonl: str | os.PathLike, png: str | os.PathLike | None = None, title: Optional[str] = None
) -> Optional[Path]:
    """Draw the loss curves of `metrics_jsonl` into `png` (default: loss_curve.png beside it), atomically;
    returns its path, or None when the file holds no loss values yet (nothing is written then)."""
    metrics_jsonl = Path(metrics_jsonl)
    png = Path(png) if png is not None else metrics_jsonl.with_name(FILE_NAME)
    curves = read_curves(_rows(metrics_jsonl))
    if not any(s["train"] or s["test"] for s in curves.values()):
        return None
    img = render(curves, title or f"loss curves of {metrics_jsonl.parent.name or metrics_jsonl}")
    fileio.write_atomic(png, lambda f: img.save(f, format="PNG"))
    return png
