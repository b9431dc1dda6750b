"""The library calls behind the commands: each job takes an options dataclass, reads its inputs, does the
work, writes its outputs and returns an exit code (e4e_jax/errors.py), raising UserError for bad input.
`e4e_jax/commands/` only parses arguments into those options; the `invert` job is e4e_jax/jobs/invert/.
"""
