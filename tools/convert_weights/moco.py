"""MoCo-v2 ResNet-50 converter (the network behind e4e's MoCo similarity loss) -> 'moco' bundle.

    python -m tools.convert_weights moco moco_v2_800ep_pretrain.pth.tar --out moco_r50

Source layout (facebookresearch/moco main_moco.py): torch.save({'epoch', 'arch', 'state_dict', 'optimizer'})
where state_dict (of the DistributedDataParallel-wrapped model) holds
    module.encoder_q.{conv1, bn1, layer{l}.{i}.*}   the query encoder: converted
    module.encoder_q.fc.0 / fc.2                     MoCo-v2 MLP head (fc.{weight,bias} for MoCo-v1): kept
                                                     in the bundle (e4e's loss does not use it)
    module.encoder_k.*, module.queue, module.queue_ptr   momentum encoder and negatives queue: ignored
A checkpoint saved without DDP (no 'module.' prefix) works the same, and so does the bare state dict
(`torch.save(model.state_dict())`, with or without 'module.'). 'optimizer' and 'epoch' are ignored. The
accepted forms are listed in docs/converters.md.

Bundle: architecture {'stage_sizes', 'head', 'head_dims'}; variables {'params', 'batch_stats'} of
e4e_jax.models.resnet.ResNet (key mapping in that module's docstring).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from e4e_jax.models.resnet import EXPANSION, STEM_KERNEL, STEM_WIDTH, stage_width
from e4e_jax.storage.torchfile import load_checkpoint

from .state_dicts import KeyTracker, batch_norm, conv, dense, single_source

_IGNORED_PREFIXES = ("encoder_k.",)
_IGNORED_KEYS = ("queue", "queue_ptr")
_ENCODER_Q = ("encoder_q.", "module.encoder_q.")  # the query encoder's keys, without or with DDP's prefix


def resnet_to_variables(keys: KeyTracker) -> tuple[dict, dict]:
    """torchvision Bottleneck-ResNet keys (under the tracker's prefix) -> (architecture, variables)."""
    sizes = []
    for l in range(1, 5):
        blocks = {int(m.group(1)) for k in keys.state if (m := re.match(rf"layer{l}\.(\d+)\.", k))}
        if not blocks or blocks != set(range(len(blocks))):
            raise KeyError(
                f"{keys.source}: missing or non-contiguous {keys.prefix}layer{l}.* blocks; expected a "
                "torchvision Bottleneck ResNet (resnet50)"
            )
        sizes.append(len(blocks))
    params: dict[str, Any] = {"conv1": conv(keys, "conv1", False, (STEM_WIDTH, 3, STEM_KERNEL, STEM_KERNEL))}
    stats: dict[str, Any] = {}
    params["bn1"], stats["bn1"] = batch_norm(keys, "bn1", STEM_WIDTH)
    cin = STEM_WIDTH
    for l, n in enumerate(sizes):
        width, out = stage_width(l), EXPANSION * stage_width(l)
        for i in range(n):
            t, name = f"layer{l + 1}.{i}", f"layer{l + 1}_{i}"
            p, s = {}, {}
            for j, (co, ci, k) in enumerate(((width, cin, 1), (width, width, 3), (out, width, 1)), 1):
                p[f"conv{j}"] = conv(keys, f"{t}.conv{j}", False, (co, ci, k, k))
                p[f"bn{j}"], s[f"bn{j}"] = batch_norm(keys, f"{t}.bn{j}", co)
            if i == 0:
                p["downsample_conv"] = conv(keys, f"{t}.downsample.0", False, (out, cin, 1, 1))
                p["downsample_bn"], s["downsample_bn"] = batch_norm(keys, f"{t}.downsample.1", out)
            params[name], stats[name] = p, s
            cin = out
    arch: dict[str, Any] = {"stage_sizes": sizes, "head": None, "head_dims": []}
    if "fc.0.weight" in keys:  # MoCo-v2: Sequential(Linear, ReLU, Linear)
        params["head"] = {"fc_0": dense(keys, "fc.0"), "fc_2": dense(keys, "fc.2")}
        arch.update(
            head="mlp",
            head_dims=[int(params["head"]["fc_0"]["kernel"].shape[1]), int(params["head"]["fc_2"]["kernel"].shape[1])],
        )
    elif "fc.weight" in keys:  # MoCo-v1 / a plain classifier
        params["head"] = {"fc": dense(keys, "fc")}
        arch.update(head="linear", head_dims=[int(params["head"]["fc"]["kernel"].shape[1])])
    return arch, {"params": params, "batch_stats": stats}


def _state_dict(ckpt: Any, path: Path) -> Mapping[str, Any]:
    """The MoCo model's state dict: ckpt['state_dict'] (main_moco.py), or ckpt itself when it is one."""
    if isinstance(ckpt, dict) and any(str(k).startswith(_ENCODER_Q) for k in ckpt):
        return ckpt
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path}: expected a MoCo checkpoint (a dict with 'state_dict', as main_moco.py saves, "
            f"or the MoCo model's state dict with encoder_q.* keys), found {found}"
        )
    arch = ckpt.get("arch")
    if arch is not None and arch != "resnet50":
        raise ValueError(f"{path}: arch is {arch!r}; only MoCo ResNet-50 checkpoints (arch 'resnet50') are supported")
    return ckpt["state_dict"]


def convert(sources: list[Path], **options) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    path = single_source("moco", sources, options, "the MoCo checkpoint")
    state = _state_dict(load_checkpoint(path), path)
    root = "module." if any(str(k).startswith("module.") for k in state) else ""
    if not any(str(k).startswith(root + "encoder_q.") for k in state):
        raise KeyError(f"{path}: no '{root}encoder_q.*' keys in state_dict; not a MoCo checkpoint")
    for k in state:  # Everything outside encoder_q must be a known, deliberately ignored entry.
        rest = str(k)[len(root) :] if str(k).startswith(root) else None
        if rest is None or not (
            rest.startswith("encoder_q.") or rest.startswith(_IGNORED_PREFIXES) or rest in _IGNORED_KEYS
        ):
            raise KeyError(
                f"{path}: unexpected state_dict key {k!r} (expected {root}encoder_q.*, "
                f"{root}encoder_k.*, {root}queue, {root}queue_ptr)"
            )
    keys = KeyTracker(state, root + "encoder_q.", str(path))
    arch, variables = resnet_to_variables(keys)
    keys.check_all_used()
    return arch, variables, {"bundle_kind": "moco", "ignored": ["encoder_k", "queue", "queue_ptr", "optimizer"]}
