"""Data-parallel placement over every local device (docs/architecture.md, "Data path of a
training step"): one mesh axis 'data'.

Batches are sharded along axis 0 (`P('data')`), parameters are replicated (`P()`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over `devices` (default: all devices of all processes).

    `jax.make_mesh` orders the devices for the fastest all-reduce on the host's topology. Its axis type
    is set to Auto: its default (Explicit) would put the sharding in the arrays' types and change how
    every jitted step is partitioned."""
    devices = devices if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), (jax.sharding.AxisType.Auto,), devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def process_rows(batch: NamedSharding, n: int) -> np.ndarray:
    """(k,) sorted global indices along axis 0 of an (n, ...) array sharded by `batch` that this
    process's devices hold: the rows a process loads for `jax.make_array_from_process_local_data`
    (which maps the local array's rows onto these indices in this order). Read from the sharding, so
    any device order of the mesh is right, contiguous per process or not."""
    held: set[int] = set()
    for index in batch.addressable_devices_indices_map((n,)).values():
        held.update(range(*index[0].indices(n)))
    return np.asarray(sorted(held), np.int64)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Put every leaf of `tree` on all devices of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(x: np.ndarray | jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
    """Split a host batch along axis 0 over the mesh (its size must divide evenly)."""
    return jax.device_put(x, batch_sharding(mesh))


def per_device(fn, mesh: jax.sharding.Mesh, in_specs: tuple, out_specs: Any):
    """jit(shard_map(fn)): `fn` sees each device's slice of the batch (specs: P() replicated,
    P(DATA_AXIS) split along axis 0).

    Inference uses this rather than letting XLA partition a global computation: the grouped
    modulated conv folds the batch into its channels, which the SPMD partitioner cannot split.
    """
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` by repeating the last row, so one compiled shape serves every batch."""
    if x.shape[0] == size:
        return x
    pad = np.repeat(x[-1:], size - x.shape[0], axis=0)
    return np.concatenate([x, pad], axis=0)


def _host_memory_bytes() -> int:
    """Physical memory of this machine, or the container's limit (cgroup v2) when lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def memory_per_device(devices: Sequence[Any] | None = None) -> int:
    """Bytes of arrays each of `devices` (default: this process's) can hold: the smallest allocator limit
    (GPU, TPU: memory_stats()['bytes_limit']); CPU devices share the host's memory, so each gets its share.
    For checking a batch size against the machine before anything is allocated."""
    devices = list(devices) if devices is not None else jax.local_devices()
    limits = []
    for d in devices:
        stats = d.memory_stats() if d.platform != "cpu" else None
        limits.append(int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None)
    if all(v is not None for v in limits):
        return min(limits)
    return _host_memory_bytes() // max(1, len(devices))
