"""Standalone converters from official PyTorch checkpoints to e4e-jax bundles.

Usage: ``python -m tools.convert_weights KIND SRC... --out DIR`` (also ``e4e-convert``).
Converters read checkpoints with `e4e_jax.torchfile` (no torch needed, no code run).
"""

CONVERTER_VERSION = "1"
