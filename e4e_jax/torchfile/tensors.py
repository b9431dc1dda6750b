"""Storages and tensor rebuilding: raw storage bytes + (offset, size, stride) -> numpy arrays.

Part of `e4e_jax.torchfile`. The ``_rebuild_*`` functions here are what the
allow-listed ``torch._utils._rebuild_*`` globals call (see `allowlist`); every view is
bounds-checked against its storage before numpy touches memory.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import numpy as np

from e4e_jax.torchfile.dtypes import TorchDtype, _raw_dtype, _to_output_dtype
from e4e_jax.torchfile.errors import CheckpointError, short_repr


def _free(nbytes: int, what: str) -> None:
    """A `_Storage.charge` that charges nothing (a storage read outside any file's budget)."""


class _Storage:
    """One storage reference: its raw little-endian bytes (None until read), element dtype, and where the
    arrays built from it beyond a view of its bytes are charged (``charge(nbytes, what)``: the file's budget)."""

    __slots__ = ("buffer", "dtype", "charge")

    def __init__(self, buffer, dtype: str, charge: Callable[[int, str], None] = _free):
        self.buffer = buffer  # bytearray / memoryview of one, or None (legacy first pass)
        self.dtype = dtype  # torch dtype name
        self.charge = charge

    def numpy(self) -> np.ndarray:
        """The whole storage as a 1-D array (fp16/bf16 -> float32)."""
        raw = _raw_dtype(self.dtype)
        return _to_output_dtype(np.frombuffer(self.buffer, raw, count=len(self.buffer) // raw.itemsize), self.dtype)


class _Pending:
    """Stand-in for tensors during the first pass over a legacy pickle (their bytes come later)."""

    def __repr__(self):
        return "<pending tensor>"


_PENDING = _Pending()


def _ints(value, what: str) -> tuple[int, ...]:
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        raise CheckpointError(f"tensor {what} is {short_repr(value)}, expected a tuple of ints") from None
    if any(v < 0 for v in out):
        raise CheckpointError(f"tensor {what} {out} has negative entries")
    return out


def _tensor(storage, storage_offset, size, stride, dtype: str | None = None):
    """numpy array for a tensor viewing ``storage`` (offset/size/stride in elements).

    The view is bounds-checked against the storage before numpy touches memory.
    """
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuild got a {type(storage).__name__} where a storage belongs")
    if storage.buffer is None:
        return _PENDING
    dtype = dtype or storage.dtype
    raw_dtype = _raw_dtype(dtype)
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    (offset,) = _ints((storage_offset,), "storage offset")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
    raw = np.frombuffer(storage.buffer, raw_dtype, count=len(storage.buffer) // raw_dtype.itemsize)
    numel = math.prod(size)
    if numel == 0:
        return _to_output_dtype(np.zeros(size, raw_dtype), dtype)
    out_itemsize = _to_output_dtype(raw[:0], dtype).itemsize
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= raw.size:
        raise CheckpointError(
            f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of a "
            f"storage holding {raw.size}: the file is corrupt"
        )
    expected, contiguous = 1, True
    for n, s in zip(reversed(size), reversed(stride)):
        if n != 1 and s != expected:
            contiguous = False
        expected *= n
    if contiguous and offset == 0 and numel == raw.size:
        arr = raw.reshape(size)  # the whole storage: hand out the bytes read, no copy (unless widened)
        if out_itemsize != raw.itemsize:
            storage.charge(numel * out_itemsize, f"a {dtype} tensor of shape {size} widened to float32")
        return _to_output_dtype(arr, dtype)
    # A view of part of a storage (or a broadcast one, stride 0) is copied: it may be larger than its bytes.
    storage.charge(numel * out_itemsize, f"a copy of a tensor view of shape {size}")
    view = np.lib.stride_tricks.as_strided(
        raw[offset:], shape=size, strides=tuple(s * raw.itemsize for s in stride), writeable=False
    )
    out = _to_output_dtype(view, dtype)
    return out.copy() if out is view else out  # copy so a small view does not pin a big storage


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, TorchDtype):
        raise CheckpointError(f"_rebuild_tensor_v3 got dtype {short_repr(dtype)}")
    return _tensor(storage, storage_offset, size, stride, dtype.name)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


def _rebuild_device_tensor(data, dtype, device, requires_grad):
    return data  # data is already a rebuilt (cpu tensor ->) numpy array
