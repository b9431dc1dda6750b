"""Tests of e4e_jax/storage/torchfile/ (`load_checkpoint`): the torch-free, code-free checkpoint reader.

Reference values come from torch itself: files are written with torch.save / pickle and read back
with torch.load(weights_only=False); the safe reader must give the same values and structure.
Hostile and broken inputs are in test_safe_torch_hostile.py; shared helpers in safe_torch_helpers.py.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from e4e_jax.storage.torchfile import PERSISTENT_MODULE, EasyDict, PersistentObject, load_checkpoint
from tests.safe_torch_helpers import _expected_array, _install_fake_nvlabs, _persistent_classes, _save, assert_same


# ----------------------------------------------------------------------------------- helpers
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
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ModuleList([torch.nn.Linear(3, 2)])
    )
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
        [
            ("lin0.model.1.weight", torch.rand(1, 64, 1, 1, generator=g)),
            ("lin1.model.1.weight", torch.rand(1, 128, 1, 1, generator=g)),
        ]
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
    assert_same(
        G_ours.buffers(), collections.OrderedDict((k, v) for k, v in G.named_buffers() if k != "scratch"), "buffers"
    )
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
    assert (linear.module_name, linear.class_name, linear.attr("in_features")) == (
        "torch.nn.modules.linear",
        "Linear",
        4,
    )
    assert G_ours.attr("missing", None) is None
    with pytest.raises(KeyError, match="no attribute 'nonexistent'"):
        G_ours.attr("nonexistent")
    assert not marker.exists()
