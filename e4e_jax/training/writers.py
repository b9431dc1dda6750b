"""Metric writers: clu's (TensorBoard) where it imports, always a JSON-lines file, PNG image grids.

`clu.metric_writers` imports TensorFlow at module level (its SummaryWriter), so on machines without TF
(the GPU device) it is unavailable; the JSON-lines writer (WORKDIR/metrics.jsonl, one object per write:
{"step", "kind", name: value...}) plus PNG grids under WORKDIR/images/ then carry the same data.
Only process 0 writes anything (docs/architecture.md, "Several processes").
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class JsonlWriter:
    """clu-style writer (write_scalars / write_images / write_hparams / flush / close) without TF."""

    def __init__(self, workdir: str | os.PathLike):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._f = open(self.dir / METRICS_FILE, "a", buffering=1)

    def _write(self, obj: dict):
        self._f.write(json.dumps(obj, sort_keys=True) + "\n")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        self._write(
            {"step": int(step), "kind": "scalars", "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
        )

    def write_images(self, step: int, images: Mapping[str, np.ndarray]):
        from e4e_jax.images import save_png

        for name, batch in images.items():
            batch = np.asarray(batch)
            for i, img in enumerate(batch):
                path = self.dir / "images" / name.replace("/", "_") / f"{int(step):08d}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_png(path, img if img.dtype == np.uint8 else img * 2.0 - 1.0)  # floats in [0, 1]
            self._write({"step": int(step), "kind": "images", "name": name, "count": int(batch.shape[0])})

    def write_hparams(self, hparams: Mapping[str, Any]):
        self._write({"step": 0, "kind": "hparams", "hparams": {k: _jsonable(v) for k, v in hparams.items()}})

    def flush(self):
        self._f.flush()

    def close(self):
        if not self._f.closed:
            self._f.close()


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


class MultiWriter:
    def __init__(self, writers: list):
        self.writers = writers

    def __getattr__(self, name):
        def call(*args, **kwargs):
            for w in self.writers:
                try:
                    getattr(w, name)(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - a failing side writer must not stop training
                    log.warning("metric writer %s.%s failed: %s", type(w).__name__, name, e)

        return call


class NullWriter:
    def __getattr__(self, name):
        return lambda *a, **k: None


def create_writer(workdir: str | os.PathLike, is_main: bool):
    """clu default writer (TensorBoard under WORKDIR/tensorboard) + JSONL on process 0; nothing elsewhere."""
    if not is_main:
        return NullWriter()
    writers: list = [JsonlWriter(workdir)]
    try:
        from clu import metric_writers

        writers.append(
            metric_writers.create_default_writer(os.fspath(Path(workdir) / "tensorboard"), asynchronous=True)
        )
    except Exception as e:  # noqa: BLE001 - ImportError, or TF/TensorBoard missing inside clu
        log.info(
            "clu metric writers unavailable (%s: %s); writing %s/metrics.jsonl and PNG grids only",
            type(e).__name__,
            e,
            workdir,
        )
    return MultiWriter(writers)
