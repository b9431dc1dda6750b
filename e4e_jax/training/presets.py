"""Training configurations (ml_collections) for every domain, importable from the installed package.

`configs/<name>.py` in the repository are thin `get_config()` wrappers around these, in the flax-examples
convention (`e4e-jax train --config configs/ffhq.py --config.batch_size=16`).

Official option names (omertov/encoder4editing options/train_options.py) are kept for the fields that
exist there; defaults are the official ones and the command line of the official README
(`--start_from_latent_avg --use_w_pool --w_discriminator_lambda 0.1 --progressive_start 20000
--val_interval 10000 --batch_size 8`), i.e. the paper's appendix weights: λ_l2 1, λ_lpips 0.8,
λ_sim 0.1 (faces, ArcFace ID loss) / 0.5 (other domains, MoCo), λ_adv 0.1, λ_d-reg 2e-4, λ_edit 1.

Ablations of the paper (Table 2) are the switches `use_progressive`, `use_delta_reg`,
`w_discriminator_lambda` and `encoder.mode`; `ablation='A'|'B'|'C'|'D'` sets them together
(see `apply_ablation`); `ablation='W'` is the W end of the trade-off (official SingleStyleCodeEncoder).
`validate` checks every number and choice before a run does any work; `config_diff` names the fields in
which two configs (e.g. a checkpoint's and the current one) differ.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from e4e_jax import domains
from e4e_jax.errors import UserError


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset_type = "ffhq_encode"        # official --dataset_type (domain label, selects nothing by itself)

    # ------------------------------------------------------------------ data
    c.data = ml_collections.ConfigDict()
    c.data.source = "folder"               # 'folder' (train_dir/test_dir) or 'synthetic' (samples of G)
    c.data.train_dir = ""
    c.data.test_dir = ""
    c.data.image_size = (256, 256)         # (H, W) encoder input; cars (192, 256)
    c.data.random_flip = True              # official train transform: RandomHorizontalFlip(0.5)
    c.data.loader = "auto"                 # 'auto' (tfds if tensorflow imports, else numpy), 'tfds', 'numpy'
    c.data.num_workers = 8                 # decoding threads of the numpy loader
    c.data.prefetch = 2                    # batches prepared ahead on the devices
    c.data.synthetic_truncation = 1.0      # synthetic source: ψ of the sampled codes
    c.data.num_eval_samples = 64           # synthetic source: held-out samples for validation

    # ------------------------------------------------------------------ networks
    c.generator = ml_collections.ConfigDict()
    c.generator.bundle = ""                # 'stylegan2' (or 'e4e') bundle: the frozen, pretrained G
    # Instead of a bundle: a StyleGAN2Config dict (+ 'seed') for a fixed-seed random generator (toy runs,
    # benchmarks).
    c.generator.random_init = config_dict.placeholder(dict)
    # 'activation' (modulate activations, shared-weight conv) or 'grouped' (per-sample weights as a grouped
    # conv). Same maths; 'grouped' cannot run on a batch sharded over several devices (XLA's partitioner
    # rejects the batch-folded feature_group_count), so training uses 'activation'.
    c.generator.modulation = "activation"
    # 'auto': sub-pixel on accelerators (no transposed-conv gradients, which XLA handles badly on GPU),
    # the official order on CPU; or 'transpose' / 'subpixel' (same maths, see e4e_jax.models.layers).
    c.generator.upsample = "auto"
    c.encoder = ml_collections.ConfigDict()
    c.encoder.arch = "e4e"                 # key of e4e_jax.training.networks.ENCODERS
    c.encoder.mode = "e4e"                 # 'e4e' (w + Δ_i), 'psp' (ablation A) or 'w' (one w, see ffhq_w)
    c.encoder.kwargs = ml_collections.ConfigDict()  # extra keyword arguments of the encoder module
    c.encoder.init_bundle = ""             # an 'e4e' bundle to start from (official --checkpoint_path)
    c.encoder.backbone_init_bundle = ""    # an 'arcface' IR-SE50 bundle for the backbone (official init)
    c.start_from_latent_avg = True

    # ------------------------------------------------------------------ losses (official names)
    c.l2_lambda = 1.0
    c.lpips_lambda = 0.8
    c.lpips_type = "alex"
    c.lpips_bundle = ""                    # 'lpips' bundle
    c.id_lambda = 0.1                      # λ_sim; the network is chosen by `similarity`
    c.similarity = "id"                    # 'id' (ArcFace, faces) or 'moco' (other domains)
    c.id_bundle = ""                       # 'arcface' bundle (similarity='id')
    c.moco_bundle = ""                     # 'moco' bundle (similarity='moco')
    c.w_discriminator_lambda = 0.1         # λ_adv
    c.delta_norm_lambda = 2e-4             # λ_d-reg
    c.edit_lambda = 1.0                    # λ_edit (paper Eq. 7)
    c.use_delta_reg = True
    c.output_size = (256, 256)             # pSp.face_pool
    c.crop_rows = config_dict.placeholder(tuple)  # cars: (32, 224)
    c.random_loss_networks = False         # LPIPS/ArcFace/MoCo with random weights: toy runs and benchmarks only
    c.train_noise = "random"               # official randomize_noise=True while training

    # ------------------------------------------------------------------ discriminator
    c.w_discriminator_lr = 2e-5
    c.r1 = 10.0
    c.d_reg_every = 16
    c.use_w_pool = True
    c.w_pool_size = 50

    # ------------------------------------------------------------------ optimisation and schedule
    c.optim_name = "ranger"
    c.learning_rate = 1e-4
    c.batch_size = 8
    c.test_batch_size = 4
    c.max_steps = 500_000
    c.use_progressive = True
    c.progressive_start = 20_000
    c.progressive_step_every = 2_000
    c.compute_dtype = "float32"            # or 'bfloat16' (params stay float32)

    # ------------------------------------------------------------------ logging / checkpoints
    c.board_interval = 50
    c.image_interval = 100
    c.val_interval = 10_000
    c.save_interval = 10_000
    c.max_val_batches = -1                 # -1: the whole test set
    c.keep_checkpoints = 3
    c.export_bundle = True                 # write an 'e4e' bundle to WORKDIR/model at the end

    # ------------------------------------------------------------------ multi-host (README "Training on a
    # TPU pod / several hosts"; e4e_jax.distributed.initialize). Unset fields fall back to the environment
    # (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); nothing set: one process.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # HOST:PORT of process 0
    c.distributed.num_processes = config_dict.placeholder(int)
    c.distributed.process_id = config_dict.placeholder(int)
    c.distributed.auto = False              # let JAX detect the cluster itself (Cloud TPU pods, SLURM, MPI)
    c.ablation = ""
    return c


def ffhq() -> ml_collections.ConfigDict:
    return base()


def w_encoder(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switch `c` to the W encoder (official --encoder_type SingleStyleCodeEncoder): one w for every layer, so
    no progressive stages and no L_d-reg (the official W encoder has no stage to set); the latent
    discriminator stays as in the official command."""
    c.encoder.mode = "w"
    c.use_progressive = False
    c.use_delta_reg = False
    return c


def ffhq_w() -> ml_collections.ConfigDict:
    return w_encoder(ffhq())


def cars() -> ml_collections.ConfigDict:
    c = base()
    c.dataset_type = "cars_encode"
    c.data.image_size = domains.CARS_INPUT_HW
    c.crop_rows = domains.cars_rows(c.output_size[0])  # of the 256x256 pooled output: (32, 224)
    c.similarity = "moco"
    c.id_lambda = 0.5
    c.max_steps = 200_000                  # official README command for cars
    return c


def _other(dataset_type: str) -> ml_collections.ConfigDict:
    c = base()
    c.dataset_type = dataset_type
    c.similarity = "moco"
    c.id_lambda = 0.5
    return c


def horse() -> ml_collections.ConfigDict:
    return _other("horse_encode")


def church() -> ml_collections.ConfigDict:
    return _other("church_encode")


def cats() -> ml_collections.ConfigDict:
    return _other("cats_encode")


def tiny() -> ml_collections.ConfigDict:
    """CPU-minutes run of the whole system: a fixed-seed 32×32 StyleGAN2 stands in for the pretrained
    generator and its samples are the training data; every loss of the paper is on, with small
    schedules (progressive stages every few steps, R1 every 4 steps)."""
    c = base()
    c.dataset_type = "tiny_synthetic"
    c.data.source = "synthetic"
    c.data.image_size = (32, 32)
    c.data.num_eval_samples = 16
    c.generator.random_init = dict(size=32, channels=(64, 64, 32, 16), style_dim=512, n_mlp=2, seed=0)
    # A small IR-SE encoder (not the official size: IR-SE50 with 512-channel style blocks is ~6 s per step
    # on 2 CPU cores): stage widths 16-128, 6 units, 128-channel FPN and style blocks (W stays 512).
    c.encoder.kwargs = ml_collections.ConfigDict(dict(widths=(16, 32, 64, 128), units=(1, 2, 2, 1),
                                                      style_channels=128))
    c.output_size = (32, 32)
    c.random_loss_networks = True
    c.lpips_lambda = 0.8
    # λ_d-reg ×100 (paper 2e-4): the toy trains for thousands of steps, not hundreds of thousands, and at
    # 2e-4 the deltas stay as large as configuration A's within that budget (BUILD_NOTES, Table-2 ablation).
    c.delta_norm_lambda = 2e-2
    c.id_lambda = 0.0                      # ArcFace/MoCo need 112-224 px inputs: off for the toy run
    c.similarity = "moco"
    c.learning_rate = 1e-4
    c.batch_size = 4
    c.test_batch_size = 4
    c.max_steps = 2000
    c.progressive_start = 20
    c.progressive_step_every = 10
    c.d_reg_every = 4
    c.w_pool_size = 8
    c.board_interval = 10
    c.image_interval = 50
    c.val_interval = 100
    c.save_interval = 100
    c.max_val_batches = 4
    return c


PRESETS = {"default": base, "ffhq": ffhq, "ffhq_w": ffhq_w, "cars": cars, "horse": horse, "church": church,
           "cats": cats, "tiny": tiny}

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
    (("batch_size", "test_batch_size", "max_steps", "board_interval", "image_interval", "val_interval",
      "save_interval", "progressive_step_every", "d_reg_every", "data.num_workers", "data.num_eval_samples"),
     lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1"),
    (("seed", "progressive_start", "keep_checkpoints", "data.prefetch", "w_pool_size"),
     lambda v: _is_int(v) and v >= 0, "a whole number ≥ 0"),
    (("max_val_batches",), lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 (the whole test set) or ≥ 1"),
    (("learning_rate", "w_discriminator_lr"), lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    (("l2_lambda", "lpips_lambda", "id_lambda", "w_discriminator_lambda", "delta_norm_lambda", "edit_lambda",
      "r1"), lambda v: _is_real(v) and v >= 0, "a finite number ≥ 0"),
    (("data.synthetic_truncation",), lambda v: _is_real(v), "a finite number"),
    (("data.image_size", "output_size"),
     lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v),
     "(height, width), whole numbers ≥ 1"),
)

# Fields with a fixed set of values.
CHOICES = {
    "data.source": ("folder", "synthetic"),
    "data.loader": ("auto", "tfds", "numpy"),
    "optim_name": ("ranger", "adam"),
    "similarity": ("id", "moco"),
    "compute_dtype": ("float32", "bfloat16"),
    "generator.modulation": ("activation", "grouped"),
    "generator.upsample": ("auto", "transpose", "subpixel"),
    "lpips_type": ("alex", "vgg"),
    "train_noise": ("random", "const", "none"),
}

# Fields that steer the run, not what it trains: free to change on --resume (config_diff leaves them out
# unless asked).
RESUME_FREE = ("max_steps", "board_interval", "image_interval", "val_interval", "save_interval",
               "max_val_batches", "keep_checkpoints", "export_bundle", "test_batch_size", "distributed",
               "data.train_dir", "data.test_dir", "data.loader", "data.num_workers", "data.prefetch")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _get(c, key: str):
    node = c
    for part in key.split("."):
        node = node[part]
    return node


def validate(c: ml_collections.ConfigDict) -> None:
    """Check every numeric field and choice of a training config before any work is done.

    Raises UserError with one line per bad field: `config.save_interval=0: must be a whole number ≥ 1`.
    """
    bad = []
    for fields, ok, want in _RULES:
        for key in fields:
            value = _get(c, key)
            if not ok(value):
                bad.append(f"config.{key}={value!r}: must be {want}")
    from e4e_jax.models.encoder_types import TYPE_OF_MODE  # deferred: configs load without flax

    for key, allowed in {**CHOICES, "encoder.mode": tuple(TYPE_OF_MODE)}.items():
        value = _get(c, key)
        if value not in allowed:
            bad.append(f"config.{key}={value!r}: must be one of {', '.join(map(repr, allowed))}")
    if c.crop_rows is not None:
        rows, height = c.crop_rows, c.output_size[0] if len(c.output_size) == 2 else 0
        if not (len(rows) == 2 and all(_is_int(r) for r in rows) and 0 <= rows[0] < rows[1] <= height):
            bad.append(f"config.crop_rows={rows!r}: must be (top, bottom) with 0 ≤ top < bottom ≤ output height "
                       f"{height}, or None")
    if bad:
        raise UserError("\n".join(bad))


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: tuple[str, ...] = RESUME_FREE
                ) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every field the two configs (as JSON dicts) set differently;
    a field missing on one side counts as `None` there. Fields in or under `ignore` are left out."""
    a, b = _flat(old), _flat(new)
    skip = lambda k: any(k == i or k.startswith(i + ".") for i in ignore)  # noqa: E731
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not skip(k) and a.get(k) != b.get(k)]
