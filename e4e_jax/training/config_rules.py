"""The rules of a training config (the configs themselves are in e4e_jax/configs/, `configs/` of the
repository): the paper's ablation switches, value checks, and the fields two configs differ in.

Ablations of the paper (Table 2) are the switches `use_progressive`, `use_delta_reg`,
`w_discriminator_lambda` and `encoder.mode`; `ablation='A'|'B'|'C'|'D'` sets them together
(see `apply_ablation`); `ablation='W'` is the W end of the trade-off (official SingleStyleCodeEncoder).
`validate` checks every number and choice before a run does any work; `config_diff` names the fields in
which two configs (e.g. a checkpoint's and the current one) differ.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import ml_collections

from e4e_jax import choices
from e4e_jax.errors import UserError

# Paper Table 2 (ablation of the editability components), as switches.
ABLATIONS = {
    "A": dict(encoder_mode="psp", use_progressive=False, use_delta_reg=False, w_discriminator_lambda=0.0),
    "B": dict(encoder_mode="e4e", use_progressive=True, use_delta_reg=True, w_discriminator_lambda=0.0),
    "C": dict(encoder_mode="e4e", use_progressive=False, use_delta_reg=False, w_discriminator_lambda=0.1),
    "D": dict(encoder_mode="e4e", use_progressive=True, use_delta_reg=True, w_discriminator_lambda=0.1),
    # Not in Table 2: the W encoder (no deltas at all), the other end of the distortion-editability trade-off.
    "W": dict(encoder_mode="w", use_progressive=False, use_delta_reg=False, w_discriminator_lambda=0.1),
}


def apply_ablation(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Set the switches of configuration `c.ablation` (paper Table 2):
    A: pSp-style W+ encoder, no L_d-reg, no L_adv;  B: + progressive deltas with L_d-reg (W^k);
    C: L_adv only (all deltas from the start, no L_d-reg);  D: both (full e4e, W^k_*);
    W: the W encoder (one w repeated, no deltas) with L_adv."""
    if not c.ablation:
        return c
    if is_restyle(c):
        raise ValueError(
            f"ablation={c.ablation!r} switches e4e's encoder (paper Table 2); config.encoder.mode="
            f"{c.encoder.mode!r} is a ReStyle encoder: set the switches themselves, or --config.ablation=''"
        )
    key = str(c.ablation).upper()
    if key not in ABLATIONS:
        raise ValueError(f"ablation must be one of {sorted(ABLATIONS)} (paper Table 2), got {c.ablation!r}")
    a = ABLATIONS[key]
    c.encoder.mode = a["encoder_mode"]
    c.use_progressive = a["use_progressive"]
    c.use_delta_reg = a["use_delta_reg"]
    if a["w_discriminator_lambda"] == 0.0 or c.w_discriminator_lambda == 0.0:
        c.w_discriminator_lambda = a["w_discriminator_lambda"]
    return c


# ----------------------------------------------------------------------------- validation

# Value rules of the numeric fields: (fields, test, what the test asks for).
_RULES = (
    (
        (
            "batch_size",
            "test_batch_size",
            "max_steps",
            "board_interval",
            "image_interval",
            "val_interval",
            "save_interval",
            "progressive_step_every",
            "d_reg_every",
            "n_iters_per_batch",
            "data.num_workers",
            "data.num_eval_samples",
        ),
        lambda v: _is_int(v) and v >= 1,
        "a whole number ≥ 1",
    ),
    (
        ("seed", "progressive_start", "keep_checkpoints", "data.prefetch", "w_pool_size"),
        lambda v: _is_int(v) and v >= 0,
        "a whole number ≥ 0",
    ),
    (("max_val_batches",), lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 (the whole test set) or ≥ 1"),
    (("learning_rate", "w_discriminator_lr"), lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    (
        ("l2_lambda", "lpips_lambda", "id_lambda", "w_discriminator_lambda", "delta_norm_lambda", "edit_lambda", "r1"),
        lambda v: _is_real(v) and v >= 0,
        "a finite number ≥ 0",
    ),
    (("data.synthetic_truncation",), lambda v: _is_real(v), "a finite number"),
    (
        ("data.image_size", "output_size"),
        lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v),
        "(height, width), whole numbers ≥ 1",
    ),
)

# Fields with a fixed set of values.
CHOICES = {
    "data.source": ("folder", "synthetic"),
    "data.loader": ("auto", "tfds", "numpy"),
    "optim_name": ("ranger", "adam"),
    "similarity": ("id", "moco"),
    "compute_dtype": choices.DTYPE_NAMES,
    "generator.modulation": tuple(sorted(choices.MODULATION_PATHS)),
    "generator.upsample": ("auto", "transpose", "subpixel"),
    "lpips_type": ("alex", "vgg"),
    "train_noise": ("random", "const", "none"),
}

# Fields that steer the run, not what it trains: free to change on --resume (config_diff leaves them out
# unless asked).
RESUME_FREE = (
    "max_steps",
    "board_interval",
    "image_interval",
    "val_interval",
    "save_interval",
    "max_val_batches",
    "keep_checkpoints",
    "export_bundle",
    "test_batch_size",
    "distributed",
    "data.train_dir",
    "data.test_dir",
    "data.loader",
    "data.num_workers",
    "data.prefetch",
)


def is_restyle(c: ml_collections.ConfigDict) -> bool:
    """Whether config `c` trains a ReStyle encoder (encoder.mode one of RESTYLE_MODES): its step refines
    the codes over `n_iters_per_batch` iterations (training/step.py) and it exports a 'restyle' bundle."""
    from e4e_jax.models.encoder_types import RESTYLE_MODES  # deferred: configs load without flax

    return c.encoder.mode in RESTYLE_MODES


def _restyle_rules(c: ml_collections.ConfigDict) -> list[str]:
    """The fields a ReStyle run needs set in one way (one line per bad field)."""
    bad = []
    if not c.start_from_latent_avg:
        bad.append(
            "config.start_from_latent_avg=False: a ReStyle encoder's first iteration starts from latent_avg "
            "(official e4e/pSp.forward add it whatever the option says); pass --config.start_from_latent_avg=true"
        )
    out_h, out_w = c.output_size if len(c.output_size) == 2 else (0, 0)
    frame = (c.crop_rows[1] - c.crop_rows[0] if c.crop_rows is not None and len(c.crop_rows) == 2 else out_h, out_w)
    if tuple(c.data.image_size) != frame:
        bad.append(
            f"config.data.image_size={tuple(c.data.image_size)}: a ReStyle encoder reads the image beside its "
            f"reconstruction, which the losses see at {frame} (config.output_size, config.crop_rows); make them equal"
        )
    return bad


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _get(c, key: str):
    node = c
    for part in key.split("."):
        node = node[part]
    return node


def validate(c: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
    """Check every numeric field and choice of a training config before any work is done.

    Raises UserError with one line per bad field: `config.save_interval=0: must be a whole number ≥ 1`;
    ValueError for an encoder.mode 'w' with deltas (check_w_mode); with `n_devices` (the mesh size, known
    once the process group is joined) also the device rules (check_devices).
    """
    bad = []
    for fields, ok, want in _RULES:
        for key in fields:
            value = _get(c, key)
            if not ok(value):
                bad.append(f"config.{key}={value!r}: must be {want}")
    from e4e_jax.models.encoder_types import RESTYLE_MODES, TYPE_OF_MODE  # deferred: configs load without flax

    for key, allowed in {**CHOICES, "encoder.mode": (*TYPE_OF_MODE, *RESTYLE_MODES)}.items():
        value = _get(c, key)
        if value not in allowed:
            bad.append(f"config.{key}={value!r}: must be one of {', '.join(map(repr, allowed))}")
    if c.crop_rows is not None:
        rows, height = c.crop_rows, c.output_size[0] if len(c.output_size) == 2 else 0
        if not (len(rows) == 2 and all(_is_int(r) for r in rows) and 0 <= rows[0] < rows[1] <= height):
            bad.append(
                f"config.crop_rows={rows!r}: must be (top, bottom) with 0 ≤ top < bottom ≤ output height "
                f"{height}, or None"
            )
    if c.use_w_pool and _is_int(c.w_pool_size) and c.w_pool_size == 0:
        # An empty pool would be a zero-size leaf of the train state, which orbax cannot checkpoint.
        bad.append(
            "config.w_pool_size=0: must be ≥ 1 while config.use_w_pool is on (the official pool holds 50); "
            "to train without the pool pass --config.use_w_pool=false"
        )
    if is_restyle(c):
        bad.extend(_restyle_rules(c))
    if c.generator.get("bundle") and c.generator.get("random_init"):
        bad.append(
            "config.generator.bundle and config.generator.random_init are both set, and a run has one "
            "generator: to train on the bundle, also pass --config.generator.random_init='{}'"
        )
    if c.data.source == "folder":
        for key in ("data.train_dir", "data.test_dir"):
            folder = _get(c, key)
            if folder and not os.path.isdir(folder):
                bad.append(f"config.{key}={folder!r}: no such folder; pass the folder of training images")
    if bad:
        raise UserError("\n".join(bad))
    check_w_mode(c)
    if n_devices is not None:
        check_devices(c, n_devices)


def check_w_mode(config) -> None:
    """encoder.mode 'w' (one w for every layer) has no deltas: progressive stages and L_d-reg must be off
    (official: the W encoder has no progressive stage to set). Raises ValueError otherwise."""
    if config.encoder.mode != "w":
        return
    on = [k for k in ("use_progressive", "use_delta_reg") if config[k]]
    if on:
        raise ValueError(
            f"encoder.mode='w' has no deltas: set {' '.join(f'--config.{k}=False' for k in on)} "
            f"(configs/ffhq_w.py does)"
        )


def check_devices(c: ml_collections.ConfigDict, n_devices: int) -> None:
    """The rules that need the device count (the mesh of all processes): raises UserError."""
    import jax  # deferred: configs load without jax

    if c.generator.modulation == "grouped" and n_devices > 1:
        raise UserError(
            "config.generator.modulation='grouped' cannot run on a batch sharded over "
            f"{n_devices} devices (XLA rejects the batch-folded grouped convolution); use "
            "--config.generator.modulation=activation (the same maths)"
        )
    if int(c.batch_size) % n_devices:
        raise UserError(
            f"config.batch_size={c.batch_size} must be divisible by the number of devices "
            f"{n_devices} ({jax.process_count()} process(es))"
        )


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: tuple[str, ...] = RESUME_FREE
) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every field the two configs (as JSON dicts) set differently;
    a field missing on one side counts as `None` there. Fields in or under `ignore` are left out."""
    a, b = _flat(old), _flat(new)
    skip = lambda k: any(k == i or k.startswith(i + ".") for i in ignore)  # noqa: E731
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not skip(k) and a.get(k) != b.get(k)]
