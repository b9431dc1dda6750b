"""The parity criterion of docs/architecture.md ("Numerics"), defined once for every parity test.

fp32 on CPU: max |ours − reference| ≤ 1e-4 · max(1, max |reference|), for images, latents and
features alike.
"""

from __future__ import annotations

import numpy as np

RELATIVE_TOLERANCE = 1e-4


def tolerance(ref) -> float:
    """Allowed max abs error against reference `ref`."""
    return RELATIVE_TOLERANCE * max(1.0, float(np.abs(np.asarray(ref)).max()))


def max_err(ours, ref) -> float:
    """max |ours − ref| computed in float64."""
    return float(np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64)).max())


def assert_close(ours, ref, what: str = "") -> None:
    """Shapes equal and max abs error within `tolerance(ref)`."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err, tol = max_err(ours, ref), tolerance(ref)
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"
