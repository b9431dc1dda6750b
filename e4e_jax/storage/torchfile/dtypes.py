"""torch dtypes as the safe checkpoint reader sees them: names, raw storage layouts, output dtypes.

Part of `e4e_jax.storage.torchfile` (import the public names from there). Raw storage
bytes are little-endian; float16 and bfloat16 are widened to float32 on the way out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from e4e_jax.storage.torchfile.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class TorchDtype:
    """A ``torch.<name>`` dtype global met in a pickle (e.g. ``TorchDtype('float32')``)."""

    name: str


# torch dtype name -> little-endian numpy dtype of its raw storage bytes
_RAW_DTYPES = {
    "float32": "<f4",
    "float64": "<f8",
    "float16": "<f2",  # returned as float32
    "bfloat16": "<u2",  # returned as float32 (upper half of the float32 bit pattern)
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "|i1",
    "uint8": "|u1",
    "bool": "|b1",
    "complex64": "<c8",
    "complex128": "<c16",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
}
_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
}
# dtypes torch has but this reader cannot turn into numpy (clear error instead of garbage)
_UNSUPPORTED_DTYPES = {
    "float8_e5m2",
    "float8_e4m3fn",
    "float8_e5m2fnuz",
    "float8_e4m3fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "complex32",
    "chalf",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
}
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
    "_UntypedStorage": "uint8",
}
_UNSUPPORTED_STORAGES = {
    "QInt8Storage",
    "QUInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
    "ComplexHalfStorage",
}
_STORAGE_MODULES = {"torch", "torch.cuda", "torch.storage", "torch.cuda.storage"}


def _raw_dtype(name: str) -> np.dtype:
    if name not in _RAW_DTYPES:
        raise CheckpointError(f"tensors of dtype torch.{name} are not supported by the safe reader")
    return np.dtype(_RAW_DTYPES[name])


def _to_output_dtype(arr: np.ndarray, name: str) -> np.ndarray:
    """Raw storage values -> returned values (fp16/bf16 widen to float32; others untouched)."""
    if name == "float16":
        return arr.astype(np.float32)
    if name == "bfloat16":
        widened = arr.astype(np.uint32)
        widened <<= 16
        return widened.view(np.float32)
    return arr
