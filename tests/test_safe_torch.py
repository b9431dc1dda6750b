"""Tests of tools/convert_weights/safe_torch.py: the torch-free, code-free checkpoint reader.

Reference values come from torch itself: files are written with torch.save / pickle and read back
with torch.load(weights_only=False); the safe reader must give the same values and structure.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.convert_weights import safe_torch
from tools.convert_weights.safe_torch import (
    PERSISTENT_MODULE,
    CheckpointError,
    EasyDict,
    PersistentObject,
    UnsafePickleError,
    load_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- helpers
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
        assert ours.dtype == exp.dtype and ours.shape == exp.shape, f"{where}: {ours.dtype}{ours.shape} vs {exp.dtype}{exp.shape}"
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


def _rich_object(with_new_dtypes: bool) -> collections.OrderedDict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5, generator=g)
    half_base = torch.randn(3, 4, generator=g).half()
    obj = collections.OrderedDict(
        f32=base,
        transposed=base.t(),  # shares base's storage, non-contiguous
        sliced=base[1:3, 2:],  # storage offset 7, strides (5, 1)
        column=base[:, 3],
        f64=torch.randn(3, 2, generator=g, dtype=torch.float64),
        f16=half_base,
        f16_view=half_base[1:, ::2],
        bf16=torch.randn(3, 2, generator=g).bfloat16(),
        i64=torch.randint(-(2**40), 2**40, (5,), generator=g),
        i32=torch.randint(-1000, 1000, (2, 2), generator=g, dtype=torch.int32),
        i16=torch.randint(-1000, 1000, (3,), generator=g, dtype=torch.int16),
        i8=torch.randint(-100, 100, (4,), generator=g, dtype=torch.int8),
        u8=torch.randint(0, 256, (2, 3), generator=g, dtype=torch.uint8),
        mask=torch.rand(7, generator=g) > 0.5,
        c64=torch.randn(3, generator=g, dtype=torch.complex64),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        expanded=torch.arange(3.0).expand(2, 3),  # stride 0
        param=torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        frozen=torch.nn.Parameter(torch.randn(3, generator=g), requires_grad=False),
        nested={
            "list": [torch.ones(2), 1, 2.5, "text", None, True],
            "tuple": (base[0], (1, "a")),
            "opts": argparse.Namespace(lr=0.1, name="ffhq", sizes=[1, 2], start_from_latent_avg=True),
            "od": collections.OrderedDict(b=1, a=2),
            "np": np.arange(6, dtype=np.float32).reshape(2, 3),
            "np_scalar": np.float64(2.25),
            "set": {1, 2},
            "bytes": b"\x00\xffabc",
            "size": torch.Size([2, 3]),
            "big": 2**70,
            "complex": 1 + 2j,
        },
    )
    if with_new_dtypes:  # torch's own legacy reader cannot load these: zip only
        obj["u16"] = torch.tensor([1, 65535, 7], dtype=torch.uint16)
        obj["u32"] = torch.tensor([3, 2**32 - 1], dtype=torch.uint32)
    return obj


def _save(obj, path: Path, fmt: str) -> Path:
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif fmt.startswith("pickle"):
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt[len("pickle"):])))
    else:
        raise ValueError(fmt)
    return path


def _torch_load(path):
    return torch.load(path, weights_only=False, map_location="cpu")


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_roundtrip_matches_torch_load(tmp_path, fmt):
    path = _save(_rich_object(with_new_dtypes=fmt == "zip"), tmp_path / f"ckpt_{fmt}.pt", fmt)
    if fmt == "zip":
        assert zipfile.is_zipfile(path)
    else:
        assert not zipfile.is_zipfile(path)
    ours = load_checkpoint(path)
    assert_same(ours, _torch_load(path))
    assert ours["f16"].dtype == np.float32 and ours["bf16"].dtype == np.float32
    assert isinstance(ours["nested"]["opts"], dict)
    for key in ("f32", "sliced", "transposed", "param"):
        assert ours[key].flags.writeable, key


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_of_tensors(tmp_path, protocol):
    """pickle.dump of tensors: storages arrive as torch.storage._load_from_bytes(legacy file bytes)."""
    obj = _rich_object(with_new_dtypes=False)
    path = _save(obj, tmp_path / "plain.pkl", f"pickle{protocol}")
    assert b"_load_from_bytes" in path.read_bytes()
    ours = load_checkpoint(path)
    assert_same(ours, pickle.loads(path.read_bytes()))
    assert_same(ours, obj)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle4"])
def test_whole_torch_modules_become_persistent_objects(tmp_path, fmt):
    g = torch.Generator().manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ModuleList([torch.nn.Linear(3, 2)]))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        net[1].running_mean.copy_(torch.randn(3, generator=g))
        net[1].running_var.copy_(torch.rand(3, generator=g) + 0.5)
        net[1].num_batches_tracked.fill_(17)
    ours = load_checkpoint(_save({"model": net, "epoch": 3}, tmp_path / f"net_{fmt}.pt", fmt))
    assert_same(ours, {"model": net, "epoch": 3})
    model = ours["model"]
    assert model.class_name == "Sequential" and model.module_name == "torch.nn.modules.container"
    bn = model.submodule("1")
    assert bn.class_name == "BatchNorm2d" and bn.attr("eps") == net[1].eps
    assert model.submodule("2.0").class_name == "Linear"
    assert list(model.parameters()) == [k for k, _ in net.named_parameters()]
    assert list(model.buffers()) == [k for k, _ in net.named_buffers()]
    with pytest.raises(KeyError, match="'nope'"):
        model.submodule("2.nope")


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_big_endian_zip(tmp_path):
    obj = _rich_object(with_new_dtypes=False)
    little = _save(obj, tmp_path / "little.pt", "zip")
    # Which dtype each data/<key> record holds, from the persistent ids of data.pkl.
    record_dtypes = {}

    class Recorder(pickle.Unpickler):
        def persistent_load(self, pid):
            record_dtypes[pid[2]] = pid[1].dtype if pid[1] is not torch.UntypedStorage else torch.uint8

        def find_class(self, module, name):
            if module == "torch._utils":
                return lambda *args: None
            return super().find_class(module, name)

    with zipfile.ZipFile(little) as zf:
        prefix = zf.namelist()[0].split("/")[0]
        Recorder(io.BytesIO(zf.read(f"{prefix}/data.pkl"))).load()
        assert record_dtypes
        big = tmp_path / "big.pt"
        with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as out:
            for info in zf.infolist():
                data = zf.read(info)
                rel = info.filename[len(prefix) + 1 :]
                if rel == "byteorder":
                    assert data == b"little"
                    data = b"big"
                elif rel.startswith("data/"):
                    dtype = record_dtypes[rel[len("data/") :]]
                    itemsize = torch.empty(0, dtype=dtype).element_size()
                    if dtype.is_complex:  # the real and imaginary halves swap separately
                        itemsize //= 2
                    data = np.frombuffer(data, f"u{itemsize}").byteswap().tobytes()
                out.writestr(info.filename, data)
    # torch reads the edited file back to the original values (so the edit is right) ...
    reference = _torch_load(big)
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            np.testing.assert_array_equal(_expected_array(reference[key]), _expected_array(value), err_msg=key)
    assert_same(load_checkpoint(big), obj)  # ... and so must we


def test_legacy_cuda_tagged_storages(tmp_path):
    """lpips v0.1 weights: legacy pickles whose storages are torch.cuda.FloatStorage on 'cuda:0'."""
    g = torch.Generator().manual_seed(2)
    state = collections.OrderedDict(
        [("lin0.model.1.weight", torch.rand(1, 64, 1, 1, generator=g)), ("lin1.model.1.weight", torch.rand(1, 128, 1, 1, generator=g))]
    )
    raw = _save(state, tmp_path / "cpu.pth", "legacy").read_bytes()
    assert raw.count(b"X\x03\x00\x00\x00cpu") == 1 and raw.count(b"ctorch\nFloatStorage\n") == 1
    cuda = raw.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0").replace(
        b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n"
    )
    path = tmp_path / "alex.pth"
    path.write_bytes(cuda)
    reference = _torch_load(path)  # torch accepts the edit as a CUDA-tagged legacy file
    assert all(torch.equal(reference[k], v) for k, v in state.items())
    assert_same(load_checkpoint(path), state)


def test_top_level_storage(tmp_path):
    values = torch.arange(5, dtype=torch.float64)
    path = tmp_path / "storage.pt"
    torch.save(values.untyped_storage(), path)
    np.testing.assert_array_equal(load_checkpoint(path).view(np.float64), values.numpy())


# ---------------------------------------------------------------------- NVlabs persistent objects
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
    for name, module in [("torch_utils", package), ("torch_utils.persistence", persistence), ("dnnlib", dnnlib), ("dnnlib.util", util)]:
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


def test_nvlabs_persistent_pickle(tmp_path, monkeypatch):
    persistence, easydict = _install_fake_nvlabs(monkeypatch)
    marker = tmp_path / "module_src_was_executed"
    module_src = f"open({str(marker)!r}, 'w').close()\nimport torch\n\nclass Generator(torch.nn.Module):\n    pass\n"
    Generator = _persistent_classes(persistence, module_src)
    G = Generator(easydict, torch.Generator().manual_seed(3))
    data = dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=easydict(resolution=8, xflip=False))
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(data))
    assert b"_reconstruct_persistent_obj" in path.read_bytes() and b"Generator" in path.read_bytes()

    ours = load_checkpoint(path)
    assert not marker.exists()
    assert ours["D"] is None and ours["G"] is ours["G_ema"]  # pickle memo: one object
    assert isinstance(ours["training_set_kwargs"], EasyDict) and ours["training_set_kwargs"].resolution == 8
    G_ours = ours["G_ema"]
    assert isinstance(G_ours, PersistentObject)
    assert (G_ours.module_name, G_ours.class_name, G_ours.version) == (PERSISTENT_MODULE, "Generator", 6)
    assert G_ours.module_src == module_src
    # Flattened names and values are torch's own.
    assert_same(G_ours.state_dict(), G.state_dict(), "state_dict")
    assert_same(G_ours.parameters(), collections.OrderedDict(G.named_parameters()), "parameters")
    assert_same(G_ours.buffers(), collections.OrderedDict((k, v) for k, v in G.named_buffers() if k != "scratch"), "buffers")
    assert "scratch" in G_ours.buffers(persistent_only=False)
    assert "mapping.fc0.weight" in G_ours.parameters() and "synthesis.b4.bias" in G_ours.parameters()
    # Attributes, including init_kwargs (stored as _init_kwargs) with nested EasyDicts.
    kwargs = G_ours.attr("init_kwargs")
    assert isinstance(kwargs, EasyDict) and kwargs.mapping_kwargs.num_layers == 1 and kwargs["z_dim"] == 4
    assert (G_ours.attr("img_resolution"), G_ours.attr("lr_multiplier"), G_ours.attr("name")) == (8, 0.01, "G_ema")
    assert G_ours.attr("block_resolutions") == [4, 8]
    mapping = G_ours.submodule("mapping")
    assert mapping.class_name == "MappingNetwork" and mapping.attr("w_dim") == 3
    np.testing.assert_array_equal(mapping.attr("w_avg"), G.mapping.w_avg.numpy())
    linear = G_ours.submodule("mapping.fc0")
    assert (linear.module_name, linear.class_name, linear.attr("in_features")) == ("torch.nn.modules.linear", "Linear", 4)
    assert G_ours.attr("missing", None) is None
    with pytest.raises(KeyError, match="no attribute 'nonexistent'"):
        G_ours.attr("nonexistent")
    assert not marker.exists()


# ------------------------------------------------------------------------------- malicious files
class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


class _UnknownClass:  # pickled by reference: tests.test_safe_torch._UnknownClass / test_safe_torch...
    def __init__(self):
        self.x = 1


def _evil_objects(marker: Path):
    return {
        "os.system": (_Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        "builtins.eval": (_Payload(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
        "builtins.exec": (_Payload(exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        "subprocess.Popen": (_Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "unknown class": (_UnknownClass(), f"{_UnknownClass.__module__}._UnknownClass"),
    }


@pytest.mark.parametrize("fmt", ["pickle2", "pickle4", "zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "unknown class"])
def test_malicious_pickles_are_refused(tmp_path, fmt, kind):
    marker = tmp_path / "pwned"
    evil, global_name = _evil_objects(marker)[kind]
    path = _save({"weight": torch.ones(2), "evil": evil}, tmp_path / f"evil_{fmt}.pt", fmt)
    with pytest.raises(UnsafePickleError) as info:
        load_checkpoint(path)
    assert info.value.global_name == global_name
    assert f"'{global_name}'" in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)
    assert not marker.exists()
    if kind == "os.system" and fmt == "pickle4":
        pickle.loads(path.read_bytes())  # the payload is live: plain pickle runs it
        assert marker.exists()


def test_pickle_cannot_patch_allowed_globals(tmp_path):
    # BUILD with slot state on an allowed class: would setattr(Linear-stand-in, '__new__', list).
    patch_class = b"\x80\x02ctorch.nn.modules.linear\nLinear\nN}X\x07\x00\x00\x00__new__cbuiltins\nlist\ns\x86b."
    # BUILD on an allowed function: would set attributes on the reader's own rebuild function.
    patch_func = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."
    for name, payload in [("class", patch_class), ("func", patch_func)]:
        path = tmp_path / f"patch_{name}.pkl"
        path.write_bytes(payload)
        with pytest.raises(UnsafePickleError, match="pickle tried to set"):
            load_checkpoint(path)
    # ... and the reader still works afterwards.
    assert_same(load_checkpoint(_save({"w": torch.ones(3)}, tmp_path / "ok.pt", "zip")), {"w": torch.ones(3)})


def test_tensor_views_are_bounds_checked(tmp_path):
    """A tensor claiming more elements than its storage holds must not read past the buffer."""
    good = _save({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "good.pt", "zip")
    bad = tmp_path / "oversized_view.pt"
    with zipfile.ZipFile(good) as zf, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as out:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename.endswith("/data.pkl"):
                assert data.count(b"K\x02K\x03\x86") == 1  # size (2, 3)
                data = data.replace(b"K\x02K\x03\x86", b"K\x09K\x03\x86")  # size (9, 3)
            out.writestr(info.filename, data)
    with pytest.raises(CheckpointError, match="reaches element 26 of a storage holding 6"):
        load_checkpoint(bad)


def test_codecs_encode_only_for_bytes(tmp_path):
    path = tmp_path / "codec.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------- broken files
@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    g = torch.Generator().manual_seed(4)
    obj = {"w": torch.randn(64, 64, generator=g), "b": torch.randn(64, generator=g)}
    return obj, {fmt: _save(obj, root / f"good_{fmt}.pt", fmt) for fmt in ("zip", "legacy", "pickle4")}


@pytest.mark.parametrize(
    "case",
    ["truncated_zip", "truncated_zip_tail", "truncated_legacy_data", "truncated_legacy_pickle", "truncated_pickle",
     "empty", "random", "text", "corrupt_zip_record"],
)
def test_broken_files_raise_checkpoint_error(tmp_path, good_files, case):
    _, files = good_files
    zip_bytes, legacy_bytes = files["zip"].read_bytes(), files["legacy"].read_bytes()
    data, expect = {
        "truncated_zip": (zip_bytes[: len(zip_bytes) // 2], "zip archive"),
        "truncated_zip_tail": (zip_bytes[:-30], "zip archive"),
        "truncated_legacy_data": (legacy_bytes[:-100], "truncated legacy torch file"),
        "truncated_legacy_pickle": (legacy_bytes[:200], "truncated"),
        "truncated_pickle": (files["pickle4"].read_bytes()[:5000], "truncated"),
        "empty": (b"", "empty"),
        "random": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), ""),
        "text": (b"<html>404 Not Found</html>\n", "not a readable PyTorch checkpoint"),
        "corrupt_zip_record": (None, "CRC"),
    }[case]
    if case == "corrupt_zip_record":
        with zipfile.ZipFile(files["zip"]) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
        data = bytearray(zip_bytes)
        data[info.header_offset + 200] ^= 0xFF  # inside the storage bytes (64x64 float32 = 16 KB)
        data = bytes(data)
    path = tmp_path / f"{case}.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expect in str(info.value)
    if case != "random":  # random bytes may well spell a GLOBAL opcode: refusing it is fine too
        assert not isinstance(info.value, UnsafePickleError)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------- no torch needed
def test_reader_works_without_torch(tmp_path, good_files, monkeypatch):
    obj, files = good_files
    persistence, easydict = _install_fake_nvlabs(monkeypatch)
    Generator = _persistent_classes(persistence, "raise SystemExit('executed')\n")
    G = Generator(easydict, torch.Generator().manual_seed(5))
    nvlabs = tmp_path / "network.pkl"
    nvlabs.write_bytes(pickle.dumps({"G_ema": G}))
    out = tmp_path / "arrays.npz"
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None
        sys.meta_path.insert(0, BlockTorch())
        sys.path.insert(0, {str(REPO)!r})
        import numpy as np
        from tools.convert_weights.safe_torch import load_checkpoint
        arrays = {{}}
        for fmt, path in {[(k, str(v)) for k, v in files.items()]!r}:
            for key, value in load_checkpoint(path).items():
                arrays[fmt + "." + key] = value
        for key, value in load_checkpoint({str(nvlabs)!r})["G_ema"].state_dict().items():
            arrays["nvlabs." + key] = value
        assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the torch blocker did not work")
        np.savez({str(out)!r}, **arrays)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with np.load(out) as arrays:
        for fmt in files:
            for key, value in obj.items():
                np.testing.assert_array_equal(arrays[f"{fmt}.{key}"], value.numpy())
        for key, value in G.state_dict().items():
            np.testing.assert_array_equal(arrays[f"nvlabs.{key}"], value.numpy())


def test_module_does_not_import_torch():
    """The reader and every module it is built from (tools/convert_weights/*.py minus the converters)."""
    here = Path(safe_torch.__file__).parent
    names = ["safe_torch", "torch_containers", "safe_unpickler", "pickle_allowlist", "torch_tensors",
             "torch_dtypes", "checkpoint_objects", "checkpoint_errors"]
    for name in names:
        source = (here / f"{name}.py").read_text()
        assert "import torch" not in source and "exec(" not in source and "compile(" not in source, name
        assert "eval(" not in source, name
