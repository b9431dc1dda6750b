"""The IR / IR-SE backbone mapping shared by the e4e (encoder) and ArcFace converters.

    input_layer.0 / .1 / .2                   -> input_layer/conv / bn / prelu
    body.{i}.shortcut_layer.0 / .1            -> body_{i}/shortcut_conv / shortcut_bn
    body.{i}.res_layer.0 / 1 / 2 / 3 / 4      -> body_{i}/bn1 / conv1 / prelu / conv2 / bn2
    body.{i}.res_layer.5.fc1 / fc2            -> body_{i}/se/fc1 / fc2
(PReLU weight -> alpha; conv and BatchNorm layouts: state_dicts.py.)
"""

from __future__ import annotations

import re
from typing import Any

from e4e_jax.models.irse import NUM_LAYERS_OF_UNITS, unit_specs

from .state_dicts import KeyTracker, batch_norm, conv


def detect_backbone(keys: KeyTracker) -> tuple[int, str]:
    """(num_layers, 'ir' | 'ir_se') from the body.* keys."""
    units = {int(m.group(1)) for k in keys.state if (m := re.match(r"body\.(\d+)\.", k))}
    n = len(units)
    if n not in NUM_LAYERS_OF_UNITS or units != set(range(n)):
        raise ValueError(
            f"{keys.source}: {keys.prefix}body.* has {n} units; an IR backbone has 24 (50 layers), 49 (100) or 50 (152)"
        )
    mode = "ir_se" if "body.0.res_layer.5.fc1.weight" in keys else "ir"
    return NUM_LAYERS_OF_UNITS[n], mode


def irse_to_variables(keys: KeyTracker, num_layers: int, mode: str) -> tuple[dict, dict]:
    """Map `input_layer.*` and `body.*` (under the tracker's prefix) onto IRSEBackbone variables.

    Returns (params, batch_stats) of e4e_jax.models.irse.IRSEBackbone.
    """
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    p, s = batch_norm(keys, "input_layer.1")
    params["input_layer"] = {
        "conv": conv(keys, "input_layer.0", False),
        "bn": p,
        "prelu": {"alpha": keys.take("input_layer.2.weight")},
    }
    stats["input_layer"] = {"bn": s}
    for i, (in_c, depth, _) in enumerate(unit_specs(num_layers)):
        b = f"body.{i}"
        up, us = {}, {}
        if in_c != depth:
            up["shortcut_conv"] = conv(keys, f"{b}.shortcut_layer.0", False)
            up["shortcut_bn"], us["shortcut_bn"] = batch_norm(keys, f"{b}.shortcut_layer.1")
        up["bn1"], us["bn1"] = batch_norm(keys, f"{b}.res_layer.0")
        up["conv1"] = conv(keys, f"{b}.res_layer.1", False)
        up["prelu"] = {"alpha": keys.take(f"{b}.res_layer.2.weight")}
        up["conv2"] = conv(keys, f"{b}.res_layer.3", False)
        up["bn2"], us["bn2"] = batch_norm(keys, f"{b}.res_layer.4")
        if mode == "ir_se":
            up["se"] = {
                "fc1": conv(keys, f"{b}.res_layer.5.fc1", False),
                "fc2": conv(keys, f"{b}.res_layer.5.fc2", False),
            }
        params[f"body_{i}"], stats[f"body_{i}"] = up, us
    return params, stats
