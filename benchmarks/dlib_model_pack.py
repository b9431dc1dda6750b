"""Lossless, smaller transport of a dlib model file (the 68-point landmark model) for the device.

    python benchmarks/dlib_model_pack.py pack shape_predictor_68_face_landmarks.dat .whl/sp68.pack
    python benchmarks/dlib_model_pack.py unpack .whl/sp68.pack /tmp/sp68.dat     # checks SHA-256

Why: the device takes at most 64 MiB of files per call; the 68-point model is 99.7 MB, 63.4 MB
with `xz -9e`, which with the dlib-bin wheel (4.2 MB) does not fit. A dlib serialised file is a
sequence of dlib's variable-length integers (one header byte: 0x80 = negative, low nibble = number
of payload bytes; then the payload, little-endian); floats are two of them (mantissa, exponent).
Split into streams (headers; payloads by length and byte position) the regular parts compress well
and the random mantissa bytes are stored as they are: 55 MB. Needs numpy only; unpack takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path

import numpy as np

MAGIC = b"E4E-DLIB-PACK-1\n"
SIZE_MASK, MAX_PAYLOAD = 0x0F, 8
PROBE_BYTES = 1 << 20  # try xz on this much of a stream before compressing all of it
MIN_GAIN = 0.98  # keep xz only if it saves more than 2%
XZ_PRESET = 6


def _token_starts(data: bytes) -> np.ndarray:
    """Offsets of every integer token (int64 (n,)); raises ValueError if the file is not a clean
    token sequence."""
    starts = np.empty(len(data) // 2 + 1, np.int64)
    pos, n, end = 0, 0, len(data)
    while pos < end:
        starts[n] = pos
        n += 1
        pos += 1 + (data[pos] & SIZE_MASK)
    if pos != end:
        raise ValueError("not a dlib serialised file (the last integer runs past the end)")
    return starts[:n]


def _streams(data: bytes) -> dict[str, bytes]:
    d = np.frombuffer(data, np.uint8)
    starts = _token_starts(data)
    headers = d[starts]
    size = headers & SIZE_MASK
    if size.max() > MAX_PAYLOAD:
        raise ValueError("not a dlib serialised file (an integer longer than 8 bytes)")
    out = {"headers": headers.tobytes()}
    for k in range(1, MAX_PAYLOAD + 1):
        sel = starts[size == k]
        for j in range(k):
            if sel.size:
                out[f"p{k}b{j}"] = d[sel + 1 + j].tobytes()
    return out


def pack(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    meta = {"name": src.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "streams": []}
    blobs = []
    for name, raw in _streams(data).items():
        probe = raw[:PROBE_BYTES]
        codec = "xz" if len(lzma.compress(probe, preset=XZ_PRESET)) < MIN_GAIN * len(probe) else "raw"
        blob = lzma.compress(raw, preset=XZ_PRESET) if codec == "xz" else raw
        meta["streams"].append({"name": name, "codec": codec, "bytes": len(blob), "raw_bytes": len(raw)})
        blobs.append(blob)
        print(f"{name}: {len(raw)} -> {len(blob)} ({codec})", file=sys.stderr)
    with open(dst, "wb") as f:
        f.write(MAGIC + json.dumps(meta).encode() + b"\n")
        for blob in blobs:
            f.write(blob)
    print(f"{src} ({len(data)} bytes) -> {dst} ({dst.stat().st_size} bytes)")


def unpack(src: Path, dst: Path) -> None:
    raw = src.read_bytes()
    if not raw.startswith(MAGIC):
        raise SystemExit(f"{src} is not a {MAGIC.strip().decode()} file")
    head_end = raw.index(b"\n", len(MAGIC))
    meta = json.loads(raw[len(MAGIC) : head_end])
    pos, streams = head_end + 1, {}
    for s in meta["streams"]:
        blob = raw[pos : pos + s["bytes"]]
        pos += s["bytes"]
        streams[s["name"]] = np.frombuffer(lzma.decompress(blob) if s["codec"] == "xz" else blob, np.uint8)
    headers = streams["headers"]
    size = (headers & SIZE_MASK).astype(np.int64)
    starts = np.cumsum(size + 1) - (size + 1)
    out = np.empty(meta["bytes"], np.uint8)
    out[starts] = headers
    for k in range(1, MAX_PAYLOAD + 1):
        sel = starts[size == k]
        for j in range(k):
            if sel.size:
                out[sel + 1 + j] = streams[f"p{k}b{j}"]
    data = out.tobytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise SystemExit(f"{src}: SHA-256 mismatch after unpacking; the pack is damaged")
    dst.write_bytes(data)
    print(f"{src} -> {dst} ({len(data)} bytes, SHA-256 {meta['sha256'][:16]}... ok)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("pack", "unpack"))
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    a = p.parse_args(argv)
    (pack if a.mode == "pack" else unpack)(a.src, a.dst)


if __name__ == "__main__":
    main()
