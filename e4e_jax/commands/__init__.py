"""Sub-commands of `e4e-jax`: each module defines `add_parser(subparsers)` and `run(args) -> int`."""
