"""One definition of the --dtype / --modulation choices (e4e_jax/choices.py), in step with the models."""

import jax.numpy as jnp
import pytest

from e4e_jax import choices
from e4e_jax.cli import build_parser
from e4e_jax.models import layers, stylegan2


def test_choices_are_the_models_own():
    assert choices.MODULATIONS == ("auto", *layers.MODULATION_PATHS)
    assert choices.NOISE_MODES == stylegan2.NOISE_MODES


def test_modulation_paths_have_one_definition():
    assert layers.MODULATION_PATHS is choices.MODULATION_PATHS
    assert choices.MODULATIONS == ("auto", *choices.MODULATION_PATHS)


def test_compute_dtype():
    assert choices.compute_dtype("float32") is jnp.float32
    assert choices.compute_dtype("bfloat16") is jnp.bfloat16
    with pytest.raises(KeyError, match="float16"):
        choices.compute_dtype("float16")


@pytest.mark.parametrize("command", ["invert", "synthesize"])
def test_commands_offer_the_shared_choices(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    offered = {a.dest: tuple(a.choices) for a in sub._actions if a.dest in ("dtype", "modulation")}
    assert offered == {"dtype": choices.DTYPE_NAMES, "modulation": choices.MODULATIONS}
