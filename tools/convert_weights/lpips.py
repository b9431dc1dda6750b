"""LPIPS v0.1 converter: linear heads + torchvision AlexNet/VGG16 feature backbone -> 'lpips' bundle.

    python -m tools.convert_weights lpips alex.pth alexnet-owt-7be5be79.pth --out lpips_alex
    python -m tools.convert_weights lpips vgg.pth vgg16-397923af.pth --out lpips_vgg
    options: --option net=alex|vgg (inferred from the weights' shapes when omitted)

Sources (any order, one or more files; every weight must come exactly once, except that one file may name a
weight under two of the keys below if both hold the same tensor, as lpips.LPIPS's state dict does):
  heads     lin{k}.model.1.weight (1, C_k, 1, 1)    lpips package v0.1 files (alex.pth / vgg.pth; legacy
                                                     torch pickles) and `lpips.LPIPS().state_dict()`
            lins.{k}.model.1.weight                   `lpips.LPIPS().state_dict()` again: the package also
                                                     registers the heads as the ModuleList `lins`, so its
                                                     state dict names each head twice (checked equal)
            lin.{k}.1.weight                          e4e's `criteria.lpips.LPIPS().state_dict()`
            {k}.1.weight                              e4e's `LinLayers` state dict (keys renamed by its
                                                     `get_state_dict`)
  backbone  features.{n}.weight / .bias               torchvision alexnet / vgg16 state dict
                                                     (`classifier.*` is not used by LPIPS and is skipped)
            {n}.weight / .bias                        a bare `features` state dict
            net.layers.{n}.*                          e4e's LPIPS module
            net.slice{s}.{n}.*                        lpips package's LPIPS module
  constants scaling_layer.shift/scale, net.mean/std  checked equal to the v0.1 ScalingLayer, not stored

Bundle: architecture {'net', 'version': '0.1'}; variables {'params': {'backbone': {'features_{n}':
{'kernel', 'bias'}}, 'lin_{k}': (C_k,)}} (e4e_jax.models.lpips.LPIPS).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from e4e_jax.models.lpips import CHANNELS, SCALE, SHIFT, conv_indices
from e4e_jax.storage.torchfile import load_checkpoint

from .state_dicts import KeyTracker, conv

_HEAD_PATTERNS = (
    r"lin(\d)\.model\.1\.weight",
    r"lins\.(\d)\.model\.1\.weight",
    r"lin\.(\d)\.1\.weight",
    r"(\d)\.1\.weight",
)
_BACKBONE_PATTERNS = (
    r"features\.(\d+)\.(weight|bias)",
    r"net\.layers\.(\d+)\.(weight|bias)",
    r"net\.slice\d\.(\d+)\.(weight|bias)",
    r"(\d+)\.(weight|bias)",
)
_SKIPPED = re.compile(r"classifier\..*")  # torchvision's classifier: not part of LPIPS
_CONSTANTS = {"scaling_layer.shift": "shift", "net.mean": "shift", "scaling_layer.scale": "scale", "net.std": "scale"}


def _canonical_key(key: str) -> str | None:
    """Canonical name ('lin{k}' or 'features.{n}.{weight|bias}') of a source key, None if unknown."""
    for pat in _HEAD_PATTERNS:
        if m := re.fullmatch(pat, key):
            return f"lin{m.group(1)}"
    for pat in _BACKBONE_PATTERNS:
        if m := re.fullmatch(pat, key):
            return f"features.{m.group(1)}.{m.group(2)}"
    return None


def _check_constant(path: Path, key: str, value: Any) -> None:
    expected = np.asarray(SHIFT if _CONSTANTS[key] == "shift" else SCALE, np.float32)
    v = np.asarray(value, np.float32).reshape(-1)
    if v.shape != expected.shape or not np.allclose(v, expected, atol=1e-6):
        raise ValueError(
            f"{path}: {key} = {v.tolist()} is not the LPIPS v0.1 ScalingLayer {expected.tolist()}; "
            "only v0.1 (with input scaling) is supported"
        )


def gather(sources: list[Path], load) -> tuple[dict[str, np.ndarray], dict[str, tuple[Path, str]]]:
    """Merge the sources into one canonical state dict. Returns (state, canonical key -> (file, key))."""
    state: dict[str, np.ndarray] = {}
    origin: dict[str, tuple[Path, str]] = {}
    for path in sources:
        this_file: set[str] = set()  # canonical keys taken from this source (aliases may repeat them)
        obj = load(path)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ValueError(
                f"{path}: expected a state dict (a mapping of parameter names to tensors), found a {type(obj).__name__}"
            )
        for key, value in obj.items():
            key = str(key)
            if _SKIPPED.fullmatch(key):
                continue
            if key in _CONSTANTS:
                _check_constant(path, key, value)
                continue
            canon = _canonical_key(key)
            if canon is None:
                raise KeyError(
                    f"{path}: unexpected key {key!r}: not an LPIPS head (lin{{k}}.model.1.weight) nor a "
                    f"torchvision alexnet/vgg16 backbone key (features.{{n}}.weight/bias)"
                )
            value = np.asarray(value)
            if canon in state:
                first_path, first_key = origin[canon]
                if canon not in this_file:
                    raise ValueError(
                        f"{path}: {key!r} duplicates {first_path}: {first_key}; pass each weight only once"
                    )
                if state[canon].shape != value.shape or not np.array_equal(state[canon], value):
                    raise ValueError(
                        f"{path}: {first_key!r} and {key!r} name the same LPIPS weight ({canon}) "
                        "but hold different values; which one to convert is ambiguous"
                    )
                continue  # an alias of the same tensor (lpips.LPIPS: lin{k} and lins.{k})
            state[canon] = value
            origin[canon] = (path, key)
            this_file.add(canon)
    return state, origin


def infer_net(state: dict[str, np.ndarray], source: str) -> str:
    """'alex' or 'vgg' from the head channel counts and/or the backbone's conv indices."""
    votes = set()
    heads = tuple(int(np.asarray(state[f"lin{k}"]).size) for k in range(5) if f"lin{k}" in state)
    for net, chans in CHANNELS.items():
        if len(heads) == 5 and heads == chans:
            votes.add(net)
    convs = {int(k.split(".")[1]) for k in state if k.startswith("features.")}
    for net in CHANNELS:
        if convs and convs == {i for i, *_ in conv_indices(net)}:
            votes.add(net)
    if len(votes) != 1:
        raise ValueError(
            f"{source}: cannot tell whether these weights are LPIPS alex or vgg (head channels "
            f"{heads}, backbone convs at features {sorted(convs)}); pass --option net=alex|vgg "
            f"and check that the head file and the backbone belong to the same net"
        )
    return votes.pop()


def convert(sources: list[Path], net: str | None = None, **options) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    if options:
        raise ValueError(f"lpips: unknown options {sorted(options)}; supported: net=alex|vgg")
    sources = [Path(s) for s in sources]
    names = ", ".join(map(str, sources))
    state, origin = gather(sources, load_checkpoint)
    inferred = infer_net(state, names) if net is None else net
    if inferred not in CHANNELS:
        raise ValueError(f"lpips: net must be 'alex' or 'vgg', got {inferred!r}")
    keys = KeyTracker(state, "", names)
    hint = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}[inferred]
    if not any(k.startswith("features.") for k in state):
        raise KeyError(
            f"{names}: no backbone weights (features.{{n}}.weight): pass the torchvision {inferred} "
            f"state dict (e.g. {hint}) as another source"
        )
    if not any(k.startswith("lin") for k in state):
        raise KeyError(
            f"{names}: no LPIPS heads (lin{{k}}.model.1.weight): pass the lpips v0.1 {inferred}.pth as another source"
        )
    backbone = {}
    for idx, out, k, cin in conv_indices(inferred):
        backbone[f"features_{idx}"] = conv(keys, f"features.{idx}", True, (out, cin, k, k))
    params: dict[str, Any] = {"backbone": backbone}
    for k, c in enumerate(CHANNELS[inferred]):
        params[f"lin_{k}"] = keys.take(f"lin{k}", (1, c, 1, 1)).reshape(c)
    left = sorted(set(state) - keys.used)
    if left:  # named as in the sources (e.g. 'lins.5.model.1.weight', not the canonical 'lin5')
        raise KeyError(
            f"unexpected keys not matched by the {inferred} LPIPS converter: "
            + ", ".join(f"{origin[k][0]}: {origin[k][1]!r}" for k in left)
        )
    return {"net": inferred, "version": "0.1"}, {"params": params}, {"bundle_kind": "lpips"}
