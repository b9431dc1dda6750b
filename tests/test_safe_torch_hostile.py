"""Tests that the safe_torch checkpoint reader refuses malicious files, survives broken ones and needs no torch."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from e4e_jax.storage import torchfile
from e4e_jax.storage.torchfile import CheckpointError, UnsafePickleError, load_checkpoint
from tests.safe_torch_helpers import _install_fake_nvlabs, _persistent_classes, _save, assert_same

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- malicious files
class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


class _UnknownClass:  # pickled by reference: tests.test_safe_torch_hostile._UnknownClass / test_safe_torch_hostile...
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
    [
        "truncated_zip",
        "truncated_zip_tail",
        "truncated_legacy_data",
        "truncated_legacy_pickle",
        "truncated_pickle",
        "empty",
        "random",
        "text",
        "corrupt_zip_record",
    ],
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
        from e4e_jax.storage.torchfile import load_checkpoint
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
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    with np.load(out) as arrays:
        for fmt in files:
            for key, value in obj.items():
                np.testing.assert_array_equal(arrays[f"{fmt}.{key}"], value.numpy())
        for key, value in G.state_dict().items():
            np.testing.assert_array_equal(arrays[f"nvlabs.{key}"], value.numpy())


def test_module_does_not_import_torch():
    """The reader and every module it is built from (e4e_jax/storage/torchfile/*.py)."""
    here = Path(torchfile.__file__).parent
    names = sorted(p.stem for p in here.glob("*.py"))
    assert {"reader", "containers", "unpickler", "allowlist", "tensors", "dtypes", "objects", "errors"} <= set(names)
    for name in names:
        source = (here / f"{name}.py").read_text()
        assert "import torch" not in source and "exec(" not in source and "compile(" not in source, name
        assert "eval(" not in source, name
