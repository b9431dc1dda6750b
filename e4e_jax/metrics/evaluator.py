"""The paper's metrics over a stream of image batches: `Evaluator.add(batch)` per batch, `report()` once.

One compiled encoder and one generator serve inversion, LEC and E(G(w)) (the encoder is the slow
compile); the edits between them are cheap eager ops. Every batch is padded to a multiple of the local
device count and sharded over them (`e4e_jax.runtime.sharding`); only the real rows enter the metrics. The
definitions are e4e_jax/definitions.py; `format_table` and `write_report` present the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from tqdm import tqdm

from e4e_jax.inference import inversion, inverters, restyle
from e4e_jax.metrics import definitions
from e4e_jax.runtime import sharding
from e4e_jax.storage import fileio

# (name, f, f^{-1}) of a latent edit for LEC (definitions.interfacegan_pair / ganspace_pair).
Edit = tuple[str, definitions.LatentFn, definitions.LatentFn]

FID_HELP = (
    "FID needs Inception weights: convert pt_inception-2015-12-05-6726825d.pth with `python -m "
    "tools.convert_weights inception pt_inception-2015-12-05-6726825d.pth --out DIR` and pass --inception DIR"
)
LPIPS_HELP = (
    "LPIPS needs LPIPS weights: convert them with `python -m tools.convert_weights lpips alex.pth "
    "alexnet-owt-7be5be79.pth --out DIR` and pass --lpips DIR"
)
LEC_HELP = "LEC needs edits: pass --directions age.pt ... and/or --ganspace PCA --ganspace-edit ..."
FID_MIN_RANK = 2048  # pool3 width: below it the covariances are rank-deficient


class Evaluator:
    """Accumulates per-image distances and feature sets of one model, batch by batch.

    model: the e4e or ReStyle model (`inverters.load`). lpips_variables / inception_variables: bundle variables,
    or None to skip LPIPS / FID. edits: the LEC edits. lec_group: LEC's averaging group (`lec_score`).
    recovery_samples: random w for E(G(w)) (0 skips it). batch_size: rows per step before rounding up
    to the device count. seed: SWD patches and directions, and the sampled w.
    """

    def __init__(
        self,
        model: inversion.E4EModel,
        *,
        lpips_variables: Optional[Mapping] = None,
        lpips_net: str = "alex",
        inception_variables: Optional[Mapping] = None,
        edits: Sequence[Edit] = (),
        lec_group: int = 1,
        recovery_samples: int = 100,
        batch_size: int = 8,
        seed: int = 0,
    ):
        self.model, self.edits, self.lec_group = model, list(edits), lec_group
        self.recovery_samples, self.seed, self.lpips_net = recovery_samples, seed, lpips_net
        self.mesh = sharding.data_mesh(jax.local_devices())
        self.batch_size = sharding.round_up(batch_size, self.mesh.size)
        hw = model.input_hw
        if isinstance(model, restyle.RestyleModel):  # its iterations from the average image, as `invert` runs them
            kernel = inverters.kernel(model, images="none")
            self.variables = sharding.replicate(kernel.variables, self.mesh)
            self._encode = kernel.fn
        else:
            self.variables = sharding.replicate(model.variables, self.mesh)
            self._encode = jax.jit(lambda v, x: inversion.encode(model, v, x))
        self._generate = jax.jit(
            lambda v, w: definitions.to_encoder_frame(
                model.generator.apply(v["generator"], w, input_is_latent=True, noise_mode="const"), hw
            )
        )
        self._lpips = jax.jit(lambda lv, x, y: definitions.lpips_per_image(lv, x, y, lpips_net))
        self._features = jax.jit(definitions.inception_features)
        self._map = jax.jit(lambda v, z: model.generator.apply(v["generator"], z, method="map"))
        self.lpips_variables = None if lpips_variables is None else sharding.replicate(lpips_variables, self.mesh)
        self.inception_variables = (
            None if inception_variables is None else sharding.replicate(inception_variables, self.mesh)
        )
        self.names: list[str] = []
        self.per: dict[str, list[np.ndarray]] = {k: [] for k in ("l2", "lpips", "variation", "delta")}
        self.lec: list[list[np.ndarray]] = [[] for _ in self.edits]
        self.feats_real: list[np.ndarray] = []
        self.feats_fake: list[np.ndarray] = []
        self.swd_real = definitions.SWDDescriptors(hw[0], seed)
        self.swd_fake = definitions.SWDDescriptors(hw[0], seed + 1)

    @property
    def count(self) -> int:
        """Images added so far."""
        return len(self.names)

    def shard(self, x: np.ndarray) -> jax.Array:
        """(b <= batch_size, ...) rows -> padded to batch_size and sharded over the devices."""
        return sharding.shard_batch(sharding.pad_batch(x, self.batch_size), self.mesh)

    def encode(self, x: jax.Array) -> jax.Array:
        """E(x): encoder-frame images (batch_size, h, w, 3), sharded -> W+ codes with latent_avg."""
        return self._encode(self.variables, x)

    def generate(self, w: jax.Array) -> jax.Array:
        """G(w) in the encoder's frame (`definitions.to_encoder_frame`): (batch_size, n, D) -> images."""
        return self._generate(self.variables, w)

    def compile(self) -> float:
        """Run every jitted step once on a batch of zeros, compiling it (or loading it from JAX's persistent
        cache), so that the progress bars after it measure work, not compilation; returns the seconds."""
        t0 = time.perf_counter()
        x = self.shard(np.zeros((self.batch_size, *self.model.input_hw, 3), np.float32))
        y = self.generate(self.encode(x))
        out = [y]
        if self.lpips_variables is not None:
            out.append(self._lpips(self.lpips_variables, x, y))
        if self.inception_variables is not None:
            out.append(self._features(self.inception_variables, x))
        if self.recovery_samples:
            cfg = self.model.gen_config
            out.append(self._map(self.variables, jax.numpy.zeros((self.batch_size, cfg.mapping_in_dim))))  # as sample_w
        jax.block_until_ready(out)
        return time.perf_counter() - t0

    def describe_steps(self) -> str:
        """The networks `compile` prepares, e.g. 'encoder, generator, LPIPS'."""
        parts = ["encoder", "generator"]
        parts += ["LPIPS"] if self.lpips_variables is not None else []
        parts += ["Inception"] if self.inception_variables is not None else []
        parts += ["mapping"] if self.recovery_samples else []
        return ", ".join(parts)

    def add(
        self,
        images: np.ndarray,
        names: Sequence[str],
        codes: Optional[np.ndarray] = None,
        recon: Optional[np.ndarray] = None,
    ) -> None:
        """One batch: originals (b, h, w, 3) in [-1, 1] named `names` (keys of the per-image report);
        their codes (b, n, D) (default: encoded here) and reconstructions (b, h, w, 3) (default: rendered
        from the codes)."""
        b = images.shape[0]
        x = self.shard(images)
        if codes is None:
            codes_dev = self.encode(x)
            recon = self.generate(codes_dev) if recon is None else recon
            codes_full = np.asarray(codes_dev)  # padded rows included: LEC re-pads these
        else:
            codes_full = np.asarray(codes)
            recon = self.generate(self.shard(codes_full)) if recon is None else recon
        codes, recon = codes_full[:b], np.asarray(recon)[:b]
        self.per["l2"].append(np.asarray(definitions.l2_per_image(images, recon)))
        if self.lpips_variables is not None:
            self.per["lpips"].append(
                np.asarray(self._lpips(self.lpips_variables, x, sharding.pad_batch(recon, self.batch_size)))[:b]
            )
        self.per["variation"].append(np.asarray(definitions.latent_variation(codes)))
        self.per["delta"].append(np.asarray(definitions.delta_norm(codes)))
        self.swd_real.add(images)
        self.swd_fake.add(recon)
        if self.inception_variables is not None:
            self.feats_real.append(np.asarray(self._features(self.inception_variables, x))[:b])
            self.feats_fake.append(
                np.asarray(self._features(self.inception_variables, sharding.pad_batch(recon, self.batch_size)))[:b]
            )
        for k, (_, f, inv) in enumerate(self.edits):  # E(x) of the originals: the codes above
            full = self.shard(codes_full)
            self.lec[k].append(
                np.asarray(definitions.lec_distances(self.encode, self.generate, None, f, inv, codes=full))[:b]
            )
        self.names.extend(names)

    def latent_recovery(self, num_samples: int) -> float:
        """Mean E(G(w)) distance over `num_samples` w = mapping(z), drawn batch by batch from `seed`."""
        cfg = self.model.gen_config

        def recover(key):
            w = definitions.sample_w(
                lambda z: self._map(self.variables, z), key, self.batch_size, cfg.mapping_in_dim, cfg.n_latent
            )
            return definitions.latent_recovery_distances(self.encode, self.generate, sharding.shard_batch(w, self.mesh))

        key, dists = jax.random.key(self.seed), []
        with tqdm(total=num_samples, desc="E(G(w))", unit="w") as bar:
            while sum(map(len, dists)) < num_samples:
                key, sub = jax.random.split(key)
                dists.append(np.asarray(recover(sub))[: num_samples - sum(map(len, dists))])
                bar.update(len(dists[-1]))
        return float(np.concatenate(dists).mean())

    def report(self) -> dict[str, Any]:
        """{'distortion', 'perception', 'editability' (with edits), 'latent', 'notes'} of the images added
        (at least one); 'notes' says what was not computed and why."""
        if not self.names:
            raise ValueError("Evaluator.report: no images were added")
        cat = {k: np.concatenate(v) if v else None for k, v in self.per.items()}
        n, notes, report = len(self.names), {}, {}
        report["distortion"] = {"l2": float(cat["l2"].mean()), "l2_std": float(cat["l2"].std())}
        if cat["lpips"] is not None:
            report["distortion"].update(
                lpips=float(cat["lpips"].mean()), lpips_std=float(cat["lpips"].std()), net=self.lpips_net
            )
        else:
            notes["lpips"] = LPIPS_HELP
        report["distortion"]["per_image"] = {
            name: {"l2": float(cat["l2"][i]), **({"lpips": float(cat["lpips"][i])} if cat["lpips"] is not None else {})}
            for i, name in enumerate(self.names)
        }

        perception = {}
        if self.inception_variables is None:
            notes["fid"] = FID_HELP
        elif n < 2:
            notes["fid"] = "FID needs at least 2 images"
        else:
            perception["fid"] = definitions.fid_from_features(
                np.concatenate(self.feats_real), np.concatenate(self.feats_fake)
            )
            if n < FID_MIN_RANK:
                notes["fid_sample_size"] = (
                    f"FID from {n} < {FID_MIN_RANK} images uses rank-deficient covariances "
                    "and is strongly biased by N: compare FIDs only at equal N"
                )
        s = definitions.swd(self.swd_real, self.swd_fake, seed=self.seed + 2)
        perception.update(swd=s["SWDx1e3_avg"], swd_per_resolution=s)
        report["perception"] = perception

        if self.edits:
            per_edit = {}
            for (name, _, _), d in zip(self.edits, self.lec):
                d = np.concatenate(d)
                try:
                    per_edit[name] = {
                        "lec": definitions.lec_score(d, self.lec_group),
                        "mean_unfiltered": float(d.mean()),
                    }
                except ValueError as e:
                    notes[f"lec {name}"] = str(e)
            scores = [v["lec"] for v in per_edit.values()]
            report["editability"] = {
                "lec": float(np.mean(scores)) if scores else None,
                "edits": per_edit,
                "lec_batch": self.lec_group,
            }
        else:
            notes["lec"] = LEC_HELP

        latent = {"variation": float(cat["variation"].mean()), "delta_norm": float(cat["delta"].mean())}
        if self.recovery_samples:
            latent.update(recovery=self.latent_recovery(self.recovery_samples), recovery_samples=self.recovery_samples)
        report["latent"] = latent
        report["notes"] = notes
        return report


# -------------------------------------------------------------------------------------------- report
# (column title, path in the report, format) in the order of the paper's tables: distortion,
# perceptual quality, editability, then the latent-space measures.
TABLE_COLUMNS = (
    ("L2 ↓", ("distortion", "l2"), "{:.4f}"),
    ("LPIPS ↓", ("distortion", "lpips"), "{:.4f}"),
    ("FID ↓", ("perception", "fid"), "{:.2f}"),
    ("SWD ↓", ("perception", "swd"), "{:.2f}"),
    ("LEC ↓", ("editability", "lec"), "{:.2f}"),
    ("Var(w+)", ("latent", "variation"), "{:.3f}"),
    ("E(G(w)) ↓", ("latent", "recovery"), "{:.3f}"),
)


def _lookup(report: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(report, Mapping) or key not in report:
            return None
        report = report[key]
    return report


def format_table(rows: Mapping[str, Mapping]) -> str:
    """A plain-text table, one row per named report, columns as TABLE_COLUMNS ('—' = not computed)."""
    header = ["Method"] + [c[0] for c in TABLE_COLUMNS]
    body = []
    for name, report in rows.items():
        cells = [name]
        for _, path, fmt in TABLE_COLUMNS:
            v = _lookup(report, path)
            cells.append(fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "—")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells):
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "-+-".join("-" * w for w in widths)] + [line(r) for r in body])


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, jax.Array)) or (isinstance(x, np.ndarray) and x.ndim == 0):
        x = np.asarray(x).item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN/inf
    return x


def write_report(path: str | os.PathLike, report: Mapping) -> Path:
    """Write `report` as indented JSON atomically (numpy/jax scalars converted, NaN -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return fileio.write_text(path, json.dumps(_jsonable(report), indent=2) + "\n")
