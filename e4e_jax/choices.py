"""The named choices shared by the command line, the configs and the library: compute dtypes,
modulated-conv formulations, noise modes and the faces align keeps.

Plain strings, no JAX import, so building the `e4e-jax` parser stays fast; `compute_dtype` maps a
name to its jnp dtype where a model is built. The models check the values they are given against these
(models.layers.MODULATION_PATHS is MODULATION_PATHS) or their own list (models.stylegan2.NOISE_MODES, kept in
step by tests/test_choices.py).
"""

from __future__ import annotations

DTYPE_NAMES = ("float32", "bfloat16")  # --dtype, config.compute_dtype; params always stay float32
# The modulated-conv formulations (same maths): per-sample weights as a grouped conv, or scaled activations.
MODULATION_PATHS = ("grouped", "activation")
# --modulation: 'auto' (the faster one for the backend, render.resolve_modulation) or one of MODULATION_PATHS.
MODULATIONS = ("auto", *MODULATION_PATHS)
NOISE_MODES = ("const", "random", "none")  # the stored per-layer buffers, fresh random, or none
# configs/tiny.py's small encoder runs ~10-15 steps/s on 2 CPU cores: quickstart's default --steps is a couple
# of minutes of training, enough for the reconstruction loss to fall several-fold; more give better inversions.
QUICKSTART_STEPS = 1000
QUICKSTART_HELDOUT = 8  # quickstart --heldout: held-out samples to invert and edit
FACES = ("largest", "all")  # align --faces: the largest face of each photo (default), or every face found


def compute_dtype(name: str):
    """The jnp dtype (jnp.float32 or jnp.bfloat16) of a name in DTYPE_NAMES."""
    import jax.numpy as jnp

    if name not in DTYPE_NAMES:
        raise KeyError(f"compute dtype must be one of {DTYPE_NAMES}, got {name!r}")
    return getattr(jnp, name)
