"""Standalone converters from official PyTorch checkpoints to e4e-jax bundles.

Usage: ``python -m tools.convert_weights KIND SRC... --out DIR`` from the repository; installed, the package is
``e4e_jax_tools.convert_weights`` and the command ``e4e-convert``, so its modules import each other relatively.
Converters read checkpoints with `e4e_jax.storage.torchfile` (no torch needed, no code run); the helpers they share
are in `state_dicts` (and `irse` for the IR-SE backbone of e4e and ArcFace).
"""

CONVERTER_VERSION = "1"


def entry() -> None:
    """The converters' process entry point (`e4e-convert`, `python -m tools.convert_weights`): Ctrl-C is
    handled from before the command's module, and with it JAX, is imported (e4e_jax/runtime/interrupts.py)."""
    import importlib

    from e4e_jax.runtime import interrupts

    interrupts.entry(lambda: importlib.import_module(".__main__", __name__).main())
