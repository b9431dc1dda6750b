"""config_rules.validate with the device count: the rules of the mesh (modulation, batch divisibility)
and the W-encoder rule live beside the other config checks."""

import pytest

from e4e_jax import configs
from e4e_jax.errors import UserError
from e4e_jax.training import config_rules


def _config(**fields):
    c = configs.get("tiny")
    for key, value in fields.items():
        c[key] = value
    return c


def test_a_batch_that_does_not_split_over_the_devices_is_refused():
    c = _config(batch_size=6)
    config_rules.validate(c)  # without the device count the batch is fine
    config_rules.validate(c, n_devices=3)
    with pytest.raises(UserError, match=r"config.batch_size=6 must be divisible by the number of devices 4"):
        config_rules.validate(c, n_devices=4)


def test_grouped_modulation_runs_on_one_device_only():
    c = _config(batch_size=4)
    c.generator.modulation = "grouped"
    config_rules.validate(c, n_devices=1)
    with pytest.raises(UserError, match="modulation=activation"):
        config_rules.validate(c, n_devices=2)


def test_validate_refuses_a_w_encoder_with_progressive_stages():
    c = _config()
    c.encoder.mode, c.use_progressive, c.use_delta_reg = "w", True, False
    with pytest.raises(ValueError, match="--config.use_progressive=False"):
        config_rules.validate(c)
