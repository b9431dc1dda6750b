"""pytorch-fid FID Inception-v3 converter -> 'inception' bundle (for FID in `e4e-jax evaluate`).

    python -m tools.convert_weights inception pt_inception-2015-12-05-6726825d.pth --out inception_fid

Source: the state dict pytorch-fid loads into torchvision's `Inception3(num_classes=1008, aux_logits=False)`:
    {block}[.{branch}].conv.weight (O, I, kh, kw)      -> params/{block}[/{branch}]/conv/kernel (kh, kw, I, O)
    {block}[.{branch}].bn.weight / .bn.bias            -> params/.../bn/scale / bias
    {block}[.{branch}].bn.running_mean / running_var   -> batch_stats/.../bn/mean / var
    {block}[.{branch}].bn.num_batches_tracked          -> dropped (inference only)
    fc.weight (C, 2048) / fc.bias (C,)                 -> params/fc/kernel (2048, C) / bias
with blocks Conv2d_1a_3x3 ... Conv2d_4a_3x3, Mixed_5b ... Mixed_7c (e4e_jax.models.inception).
A state dict wrapped as {'state_dict': ...} is accepted too. Every other key is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .state_dicts import KeyTracker, conv_kernel, load_state_dict, single_source


def _expected_tree(num_classes: int) -> dict:
    """Shapes of the Flax variables (abstract: nothing is computed)."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.inception import INPUT_SIZE, FIDInceptionV3

    model = FIDInceptionV3(num_classes=num_classes)
    x = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, return_logits=True))


def _fill(tree: dict, path: tuple[str, ...], collection: str, keys: KeyTracker) -> Any:
    """Replace every abstract leaf of `tree` by the matching torch tensor (transposed where needed)."""
    if isinstance(tree, dict):
        return {k: _fill(v, path + (k,), collection, keys) for k, v in tree.items()}
    shape = tuple(tree.shape)
    *module, leaf = path
    base = ".".join(module)
    if module and module[-1] == "conv" and leaf == "kernel":
        kh, kw, cin, cout = shape
        return conv_kernel(keys.take(f"{base}.weight", (cout, cin, kh, kw)))
    if module == ["fc"]:
        if leaf == "kernel":
            return np.ascontiguousarray(keys.take("fc.weight", shape[::-1]).T)
        return keys.take("fc.bias", shape)
    torch_leaf = {
        ("params", "scale"): "weight",
        ("params", "bias"): "bias",
        ("batch_stats", "mean"): "running_mean",
        ("batch_stats", "var"): "running_var",
    }[(collection, leaf)]
    return keys.take(f"{base}.{torch_leaf}", shape)


def convert(sources: list[Path], **options) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    path = single_source("inception", sources, options, "pt_inception-2015-12-05-6726825d.pth")
    state = {str(k): v for k, v in load_state_dict(path, "parameter name -> tensor").items()}
    if "fc.weight" not in state:
        hint = (
            " (this looks like a torchvision inception_v3 checkpoint with AuxLogits: FID needs the pytorch-fid "
            "weights pt_inception-2015-12-05-6726825d.pth)"
            if any(k.startswith("AuxLogits.") for k in state)
            else ""
        )
        raise KeyError(f"{path}: missing key 'fc.weight'; not a pytorch-fid Inception state dict{hint}")
    fc = np.asarray(state["fc.weight"])
    if fc.ndim != 2 or fc.shape[1] != 2048:
        raise ValueError(f"{path}: fc.weight has shape {fc.shape}, expected (num_classes, 2048)")
    num_classes = int(fc.shape[0])
    keys = KeyTracker(state, "", str(path))
    for k in state:
        if k.endswith(".bn.num_batches_tracked"):
            keys.skip(k)
    tree = _expected_tree(num_classes)
    variables = {col: _fill(dict(tree[col]), (), col, keys) for col in ("params", "batch_stats")}
    keys.check_all_used()
    architecture = {"name": "fid_inception_v3", "source_layout": "pytorch-fid", "num_classes": num_classes}
    return architecture, variables, {"bundle_kind": "inception"}
