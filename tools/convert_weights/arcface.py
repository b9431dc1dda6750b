"""ArcFace IR-SE50 converter (the identity network of pSp/e4e's ID loss) -> 'arcface' bundle.

    python -m tools.convert_weights arcface model_ir_se50.pth --out arcface_ir_se50

Source: a plain state dict of model_irse.Backbone(112, 50, 'ir_se') (TreB1eN's InsightFace port):
    input_layer.{0,1,2}.*, body.{i}.*            IR-SE backbone (mapping: tools/convert_weights/irse.py)
    output_layer.0.*  BatchNorm2d(512)           -> output_bn
    output_layer.3.*  Linear(512·7·7, 512)       -> output_linear (kernel = weight.T; its rows stay in torch's
                                                    C, H, W flatten order, which the model reproduces)
    output_layer.4.*  BatchNorm1d(512)           -> output_bn1d (affine=False checkpoints: scale 1, bias 0)
(output_layer.1 is Dropout and .2 Flatten: no weights.) A checkpoint wrapped as {'state_dict': ...} and a
'module.' (DataParallel) prefix are accepted (every accepted form: docs/converters.md).

Bundle: architecture {'num_layers', 'mode', 'input_size'}; variables {'params', 'batch_stats'} of
e4e_jax.models.arcface.ArcFace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from e4e_jax.models.arcface import EMBEDDING_DIM, INPUT_SIZE_OF_FAN_IN

from .irse import detect_backbone, irse_to_variables
from .state_dicts import KeyTracker, batch_norm, load_state_dict, single_source


def _bn1d(keys: KeyTracker, name: str, c: int) -> tuple[dict, dict]:
    """BatchNorm1d, with or without affine parameters (IR_SE_50() builds it with affine=False)."""
    if f"{name}.weight" in keys:
        return batch_norm(keys, name)
    if f"{name}.num_batches_tracked" in keys:
        keys.skip(f"{name}.num_batches_tracked")
    stats = {"mean": keys.take(f"{name}.running_mean", (c,)), "var": keys.take(f"{name}.running_var", (c,))}
    return {"scale": np.ones(c, np.float32), "bias": np.zeros(c, np.float32)}, stats


def state_to_variables(state: dict, source: str) -> tuple[dict, dict]:
    """ArcFace Backbone state dict -> (architecture, variables)."""
    prefix = "module." if state and all(str(k).startswith("module.") for k in state) else ""
    keys = KeyTracker(state, prefix, source)
    if "output_layer.3.weight" not in keys:
        raise KeyError(
            f"{source}: missing key {prefix}output_layer.3.weight: not an ArcFace IR/IR-SE Backbone "
            "state dict (expected input_layer.*, body.*, output_layer.*)"
        )
    num_layers, mode = detect_backbone(keys)
    bb_params, bb_stats = irse_to_variables(keys, num_layers, mode)
    w = keys.take("output_layer.3.weight")
    if w.ndim != 2 or w.shape[0] != EMBEDDING_DIM or w.shape[1] not in INPUT_SIZE_OF_FAN_IN:
        raise ValueError(
            f"{source}: {prefix}output_layer.3.weight has shape {w.shape}, expected (512, 512*7*7) "
            "for 112x112 inputs or (512, 512*14*14) for 224x224"
        )
    params: dict[str, Any] = {"backbone": bb_params}
    stats: dict[str, Any] = {"backbone": bb_stats}
    params["output_bn"], stats["output_bn"] = batch_norm(keys, "output_layer.0")
    params["output_linear"] = {
        "kernel": np.ascontiguousarray(w.T),
        "bias": keys.take("output_layer.3.bias", (EMBEDDING_DIM,)),
    }
    params["output_bn1d"], stats["output_bn1d"] = _bn1d(keys, "output_layer.4", EMBEDDING_DIM)
    keys.check_all_used()
    arch = {"num_layers": num_layers, "mode": mode, "input_size": INPUT_SIZE_OF_FAN_IN[w.shape[1]]}
    return arch, {"params": params, "batch_stats": stats}


def convert(sources: list[Path], **options) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    path = single_source("arcface", sources, options, "model_ir_se50.pth")
    obj = load_state_dict(path, "model_ir_se50.pth is one")
    arch, variables = state_to_variables(dict(obj), str(path))
    return arch, variables, {"bundle_kind": "arcface"}
