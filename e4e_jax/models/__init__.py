"""Pure Flax linen modules (no file I/O)."""
