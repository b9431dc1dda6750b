"""Whether `invert --batch-size` fits the machine, checked before the buffers are allocated: one `error:` line
with a batch size that fits, instead of a NumPy MemoryError or an XLA allocation abort.

Two checks: before anything is written, the host buffers a batch size implies (`check_host`: decoded
images read ahead, the writers' slot ring, results on their way back); after the compile, XLA's own
estimate of one step on each device (`check_compiled`) against the device's free memory (on the CPU
backend, the host's).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from e4e_jax.errors import UserError

# Host copies of one image's data while a batch is in flight (pipeline.py): inputs: the decode read-ahead
# of two batches, the batch being stacked and its padded copy; outputs: the writers' ring of four
# batches, the batch copied back and the one in flight.
INPUT_COPIES = 4
OUTPUT_COPIES = 6
# Share of the free memory a run may plan to use (the rest: Python, PIL's decoders, the page cache).
USABLE_SHARE = 0.9
GIB = 2**30


def available_host_bytes() -> Optional[int]:
    """Memory this machine can still give: /proc/meminfo's MemAvailable, lowered by the cgroup (v2) limit
    of this process; None where neither is known."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        group = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
        root = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (root / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError, StopIteration):
        pass
    return min(found) if found else None


def _refuse(batch_size: int, multiple: int, need: float, free: float, where: str, holder: str) -> None:
    fit = int(free * USABLE_SHARE * batch_size / need) // multiple * multiple  # the need grows with the batch
    advice = f"pass --batch-size {fit} or less" if fit >= multiple else "even the smallest batch does not fit"
    raise UserError(
        f"--batch-size {batch_size} needs about {need / GIB:.1f} GiB {where}; {holder} has {free / GIB:.1f} GiB "
        f"free: {advice}"
    )


def check_host(
    batch_size: int,
    multiple: int,
    input_hw: tuple[int, int],
    out_hw: Optional[tuple[int, int]],
    latent_shape: tuple[int, ...],
    free: Optional[int] = None,
) -> None:
    """UserError if the host buffers of `batch_size` images do not fit (`free`: available bytes, default
    `available_host_bytes`). out_hw: saved reconstructions' (height, width), None without images;
    `multiple`: the local device count (batch sizes are multiples of it); latent_shape: one image's latents
    ((n_latent, 512), or (iterations, n_latent, 512) when every ReStyle iteration is kept)."""
    free = available_host_bytes() if free is None else free
    if free is None:
        return
    per_image = INPUT_COPIES * input_hw[0] * input_hw[1] * 3 + math.prod(latent_shape) * 4
    if out_hw is not None:
        per_image += OUTPUT_COPIES * out_hw[0] * out_hw[1] * 3
    need = float(per_image) * batch_size
    if need > free * USABLE_SHARE:
        _refuse(batch_size, multiple, need, free, "of host memory for its buffers", "this machine")


def check_compiled(compiled, batch_size: int, devices: Sequence, resident_bytes: int, free: Optional[int] = None):
    """UserError if one step of `compiled` (XLA's memory analysis: temporaries, outputs and the input
    batch; the `resident_bytes` of weights already placed are not counted again) does not fit the free
    memory of a device of `devices` (`free`: bytes, default measured: the allocator's limit less what is in
    use; on the CPU backend the host's available memory, shared by every CPU device)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return
    step = analysis.temp_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
    step += max(0, analysis.argument_size_in_bytes - resident_bytes)
    device = devices[0]
    where, holder = "on each device (XLA's estimate of one step)", f"{device.platform}:{device.id}"
    if free is None:
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "bytes_limit" in stats:
            free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        else:
            free = available_host_bytes()
            if free is not None and device.platform == "cpu":
                step *= len(devices)  # every CPU device computes in the same host memory
                where = f"of host memory (XLA's estimate of one step on {len(devices)} CPU device(s))"
                holder = "this machine"
    if free is None:
        return
    if step > free * USABLE_SHARE:
        _refuse(batch_size, len(devices), float(step), free, where, holder)


def tree_bytes(tree) -> int:
    """Bytes of the arrays of a pytree (the model's variables) on one device."""
    import jax

    return int(sum(getattr(a, "nbytes", 0) for a in jax.tree_util.tree_leaves(tree)))
