"""Container formats of PyTorch checkpoints: what surrounds the pickles, and the raw storage bytes.

Part of `e4e_jax.torchfile` (whose docstring describes the formats). The format is
chosen by the file's first bytes, not its name, in `_load_stream`:
  * zip archives written by ``torch.save`` (`_load_zip`): ``<prefix>/data.pkl`` plus one record
    ``<prefix>/data/<key>`` per storage, and ``<prefix>/byteorder``;
  * legacy (non-zip) ``torch.save`` files (`_load_legacy`): a chain of pickles followed by the
    storages' raw bytes;
  * plain pickles: unpickled as they are (embedded torch.save bytes come back here through
    ``torch.storage._load_from_bytes``); tar files of PyTorch < 0.4 are refused.
All pickles are read with the restricted unpickler (`unpickler`); storage bytes are read once,
bounds- and CRC-checked, straight into the buffers the returned arrays view.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from e4e_jax.torchfile.allowlist import _StorageType
from e4e_jax.torchfile.dtypes import _raw_dtype
from e4e_jax.torchfile.errors import CheckpointError, short_repr
from e4e_jax.torchfile.tensors import _ints, _Storage
from e4e_jax.torchfile.unpickler import _Context, _unpickle

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # first pickle of a legacy torch.save file
PROTOCOL_VERSION = 1001  # second pickle of a legacy torch.save file
_CHUNK = 64 << 20  # bytes per readinto call on compressed zip members


def _text(value, what: str) -> str:
    if isinstance(value, bytes):  # Python 2 str read with encoding='bytes'
        value = value.decode("ascii")
    if not isinstance(value, str):
        raise CheckpointError(f"{what} is a {type(value).__name__}, expected a string")
    return value


def _parse_storage_id(pid) -> tuple[str, str, int, tuple | None]:
    """('storage', StorageType, key, location, numel[, view]) -> (key, dtype, numel, view)."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or _text(pid[0], "persistent id type") != "storage":
        raise CheckpointError(f"unexpected persistent id {short_repr(pid)}")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"persistent id names storage type {short_repr(storage_type)}")
    _text(location, "storage location")  # 'cpu', 'cuda:0', ...: irrelevant here
    (numel,) = _ints((numel,), "storage size")
    view = pid[5] if len(pid) == 6 else None
    return _text(key, "storage key"), storage_type.dtype, numel, view


def _read_exact(f, nbytes: int, what: str) -> bytearray:
    """Read exactly ``nbytes`` into a fresh (writable) bytearray, without an intermediate copy."""
    buf = bytearray(nbytes)
    view, pos = memoryview(buf), 0
    while pos < nbytes:
        got = f.readinto(view[pos : pos + _CHUNK])
        if not got:
            raise CheckpointError(f"{what} is truncated: needs {nbytes} bytes, found {pos}; re-download the file")
        pos += got
    return buf


def _stream_size(f) -> int:
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(here)
    return end


def _byteswap(buf, dtype: str) -> None:
    raw = _raw_dtype(dtype)
    if raw.itemsize > 1:
        np.frombuffer(buf, raw, count=len(buf) // raw.itemsize).byteswap(inplace=True)


# --------------------------------------------------------------------------------------- formats
def _zip_member(f, info: zipfile.ZipInfo, zf: zipfile.ZipFile, nbytes: int | None = None) -> bytearray:
    """Bytes of one archive member (the first ``nbytes`` of it), read once, CRC-checked when whole."""
    nbytes = info.file_size if nbytes is None else nbytes
    if nbytes > info.file_size:
        raise CheckpointError(
            f"record {info.filename} holds {info.file_size} bytes but {nbytes} are needed: the file is corrupt"
        )
    what = f"record {info.filename}"
    if info.compress_type == zipfile.ZIP_STORED:
        # Read from the local header ourselves: torch pads it for alignment, and this reads
        # straight into the destination buffer.
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{what}: bad local zip header (corrupt or truncated zip archive): re-download it")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        buf = _read_exact(f, nbytes, what)
    else:
        with zf.open(info) as member:
            buf = _read_exact(member, nbytes, what)
    # torch can be told to skip CRCs (they are then 0): only check real ones.
    if info.CRC and nbytes == info.file_size and zlib.crc32(buf) != info.CRC:
        raise CheckpointError(f"{what} fails its CRC check: the file is corrupt; re-download it")
    return buf


def _load_zip(f, ctx: _Context) -> Any:
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error, ValueError) as e:
        raise CheckpointError(
            f"truncated or corrupt zip archive ({e}); the download or save was probably cut short: re-download it"
        ) from None
    with zf:
        if not infos:
            raise CheckpointError("empty zip archive: not a torch.save checkpoint")
        names = {i.filename: i for i in infos}
        prefix = infos[0].filename.split("/", 1)[0]
        if f"{prefix}/data.pkl" not in names:
            found = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if found:
                prefix = found[0].split("/", 1)[0]
            elif any(n.endswith("constants.pkl") for n in names):
                raise CheckpointError(
                    "TorchScript archive (torch.jit.save), not a torch.save checkpoint: save a state_dict instead"
                )
            else:
                raise CheckpointError("zip archive without <prefix>/data.pkl: not a torch.save checkpoint")
        byteorder = "little"
        if f"{prefix}/byteorder" in names:
            byteorder = bytes(_zip_member(f, names[f"{prefix}/byteorder"], zf)).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"unknown byteorder record {short_repr(byteorder)}")
        storages: dict[str, bytearray] = {}

        def persistent_load(pid):
            key, dtype, numel, _ = _parse_storage_id(pid)
            if key not in storages:
                name = f"{prefix}/data/{key}"
                if name not in names:
                    raise CheckpointError(f"archive lacks storage record {name}: the file is incomplete")
                nbytes = numel * _raw_dtype(dtype).itemsize
                ctx.charge(nbytes, f"storage record {name}")  # a zip's sizes are claims until read
                buf = _zip_member(f, names[name], zf, nbytes)
                if byteorder == "big":
                    _byteswap(buf, dtype)
                storages[key] = buf
            return _Storage(storages[key], dtype, ctx.charge)

        data_pkl = _zip_member(f, names[f"{prefix}/data.pkl"], zf)
        return _unpickle(io.BytesIO(data_pkl), ctx, persistent_load)


def _load_legacy(f, ctx: _Context) -> Any:
    """Legacy torch.save body; ``f`` is just past the magic-number pickle."""
    protocol = _unpickle(f, ctx)
    if protocol != PROTOCOL_VERSION:
        raise CheckpointError(
            f"legacy torch file with protocol version {short_repr(protocol)}, expected {PROTOCOL_VERSION}"
        )
    sys_info = _unpickle(f, ctx)
    if not isinstance(sys_info, dict):
        raise CheckpointError("legacy torch file: third record is not the sys_info dict")
    main_start = f.tell()
    roots: dict[str, str] = {}  # root key -> dtype of its first reference (sets the element size)

    def persistent_load(pid, buffers=None):
        if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
            return pid[1]  # a pickled nn.Module class (already vetted by find_class); its source is ignored
        key, dtype, numel, view = _parse_storage_id(pid)
        roots.setdefault(key, dtype)
        if buffers is None:  # first pass: bytes not read yet
            return _Storage(None, dtype)
        buf = buffers[key]
        if view is not None:  # pre-1.0 storage views: (view_key, offset, size) in elements
            _, start, count = view
            itemsize = _raw_dtype(dtype).itemsize
            (start, count) = _ints((start, count), "storage view")
            if (start + count) * itemsize > len(buf):
                raise CheckpointError(f"storage view {short_repr(view)} exceeds its storage: the file is corrupt")
            buf = memoryview(buf)[start * itemsize : (start + count) * itemsize]
        return _Storage(buf, dtype, ctx.charge)

    # Pass 1 learns the storages' dtypes and where the main pickle ends (the raw bytes follow it).
    _unpickle(f, ctx, persistent_load)
    keys = _unpickle(f, ctx)
    if not isinstance(keys, list):
        raise CheckpointError("legacy torch file: storage key list missing after the main pickle")
    remaining = _stream_size(f) - f.tell()
    buffers = {}
    for key in keys:
        key = _text(key, "storage key")
        if key not in roots:
            raise CheckpointError(f"legacy torch file lists storage {short_repr(key)} that nothing references")
        header = f.read(8)
        if len(header) < 8:
            raise CheckpointError(f"truncated legacy torch file: storage {short_repr(key)} is missing; re-download it")
        numel = int.from_bytes(header, "little", signed=True)
        nbytes = numel * _raw_dtype(roots[key]).itemsize
        remaining -= 8
        if numel < 0 or nbytes > remaining:
            raise CheckpointError(
                f"truncated legacy torch file: storage {short_repr(key)} needs {nbytes} bytes but only {remaining} "
                "remain; re-download it"
            )
        ctx.charge(nbytes, f"storage {short_repr(key)}")
        buffers[key] = _read_exact(f, nbytes, f"storage {short_repr(key)}")
        remaining -= nbytes
    missing = sorted(set(roots) - set(buffers))
    if missing:
        raise CheckpointError(f"legacy torch file lacks data for storages {missing[:5]}: the file is corrupt")
    f.seek(main_start)  # pass 2: the same pickle (scanned in pass 1), now with the bytes in place
    return _unpickle(f, ctx, lambda pid: persistent_load(pid, buffers), scanned=True)


def _load_stream(f, ctx: _Context, what: str) -> Any:
    head = f.read(512)
    f.seek(0)
    if not head:
        raise CheckpointError(f"{what} is empty (0 bytes): the download or save did not complete; re-download it")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _load_zip(f, ctx)
    if head[257:262] == b"ustar":
        raise CheckpointError("tar-format torch checkpoint (PyTorch < 0.4) is not supported: re-save it")
    first = _unpickle(f, ctx)  # a plain pickle's whole content, or a legacy file's magic number
    if type(first) is int and first == MAGIC_NUMBER:
        return _load_legacy(f, ctx)
    return first
