"""Shared helpers of the safe_torch tests: torch-vs-reader comparison, checkpoint writing, fake NVlabs modules."""

from __future__ import annotations

import argparse
import collections
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from e4e_jax.storage.torchfile import PersistentObject


def _expected_array(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):  # the reader widens these to float32
        t = t.float()
    return t.numpy()


def assert_same(ours, ref, where="obj"):
    """Structure and values of the reader's output equal torch's object (tensors -> numpy)."""
    if isinstance(ref, torch.nn.Module):
        assert isinstance(ours, PersistentObject), where
        assert (ours.module_name, ours.class_name) == (type(ref).__module__, type(ref).__name__), where
        assert_same(ours.state_dict(), ref.state_dict(), where + ".state_dict()")
    elif isinstance(ref, torch.Tensor):
        exp = _expected_array(ref)
        assert isinstance(ours, np.ndarray), f"{where}: {type(ours)}"
        assert ours.dtype == exp.dtype and ours.shape == exp.shape, (
            f"{where}: {ours.dtype}{ours.shape} vs {exp.dtype}{exp.shape}"
        )
        np.testing.assert_array_equal(ours, exp, err_msg=where)
    elif isinstance(ref, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == ref.dtype, where
        np.testing.assert_array_equal(ours, ref, err_msg=where)
    elif isinstance(ref, argparse.Namespace):
        assert isinstance(ours, dict), where
        assert_same(ours, dict(vars(ref)), where)
    elif isinstance(ref, dict):
        assert isinstance(ours, dict), f"{where}: {type(ours)}"
        if isinstance(ref, collections.OrderedDict):
            assert isinstance(ours, collections.OrderedDict), where
        assert list(ours) == list(ref), where
        for k in ref:
            assert_same(ours[k], ref[k], f"{where}[{k!r}]")
    elif isinstance(ref, (list, tuple)):
        assert type(ours) is (tuple if isinstance(ref, torch.Size) else type(ref)), f"{where}: {type(ours)}"
        assert len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert type(ours) is type(ref) and ours == ref, f"{where}: {ours!r} vs {ref!r}"


def _save(obj, path: Path, fmt: str) -> Path:
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif fmt.startswith("pickle"):
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt[len("pickle") :])))
    else:
        raise ValueError(fmt)
    return path


def _install_fake_nvlabs(monkeypatch):
    """Fake `torch_utils.persistence` + `dnnlib` modules, enough for pickle to reference them."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # the real one exec()s meta['module_src']
        raise AssertionError("the safe reader must never call the pickled reconstruct function")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package = types.ModuleType("torch_utils")
    package.persistence = persistence

    class FakeEasyDict(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def __setattr__(self, name, value):
            self[name] = value

    FakeEasyDict.__module__, FakeEasyDict.__qualname__, FakeEasyDict.__name__ = "dnnlib.util", "EasyDict", "EasyDict"
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = FakeEasyDict
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.util, dnnlib.EasyDict = util, FakeEasyDict
    for name, module in [
        ("torch_utils", package),
        ("torch_utils.persistence", persistence),
        ("dnnlib", dnnlib),
        ("dnnlib.util", util),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    return persistence, FakeEasyDict


def _persistent_classes(persistence, module_src):
    class Persistent:
        """What @persistence.persistent_class adds: pickles as (reconstruct, (meta,)), no class ref."""

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            meta = dict(type="class", version=6, module_src=module_src, class_name=type(self).__name__, state=fields[2])
            return (persistence._reconstruct_persistent_obj, (meta,))

    class MappingNetwork(Persistent, torch.nn.Module):
        def __init__(self, z_dim, w_dim, g):
            super().__init__()
            self._init_args, self._init_kwargs = (), dict(z_dim=z_dim, w_dim=w_dim)
            self.z_dim, self.w_dim = z_dim, w_dim
            self.fc0 = torch.nn.Linear(z_dim, w_dim)  # a plain torch module inside a persistent one
            self.register_buffer("w_avg", torch.randn(w_dim, generator=g))

    class Generator(Persistent, torch.nn.Module):
        def __init__(self, easydict, g):
            super().__init__()
            self._init_args = ()
            self._init_kwargs = easydict(z_dim=4, w_dim=3, img_resolution=8, mapping_kwargs=easydict(num_layers=1))
            self.z_dim, self.img_resolution, self.lr_multiplier, self.name = 4, 8, 0.01, "G_ema"
            self.block_resolutions = [4, 8]
            self.mapping = MappingNetwork(4, 3, g)
            self.synthesis = torch.nn.ModuleDict({"b4": torch.nn.Conv2d(3, 2, 1)})
            self.weight = torch.nn.Parameter(torch.randn(2, 3, generator=g))
            self.register_buffer("noise_const", torch.randn(4, 4, generator=g))
            self.register_buffer("scratch", torch.randn(2, generator=g), persistent=False)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g))

    return Generator
