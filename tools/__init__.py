"""Scripts beside the library (the library never imports them); installed as `e4e_jax_tools` (setup.py)."""
