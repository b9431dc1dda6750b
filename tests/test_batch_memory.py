"""`invert --batch-size` is checked against what the machine can hold before anything is allocated
(e4e_jax/batch_inversion/memory.py): one `error:` line naming a batch size that fits, exit status 2,
nothing written; never a NumPy MemoryError or an XLA allocation abort.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from e4e_jax.batch_inversion import memory
from e4e_jax.cli import main as cli_main
from e4e_jax.errors import UserError
from tests import shared_files


@pytest.fixture(scope="module")
def small_bundle(shared_dir) -> Path:
    return shared_files.small_e4e_bundle(shared_dir)


def test_absurd_batch_size_is_one_line_and_nothing_written(small_bundle, shared_dir, tmp_path, capsys):
    photos = shared_files.invert_photos(shared_dir)
    out = tmp_path / "out"
    argv = ["invert", "--model", str(small_bundle), "--images", str(photos), "--output", str(out)]
    assert cli_main([*argv, "--batch-size", "1000000000"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --batch-size 1000000000 needs about ") and "GiB of host memory" in line, line
    fits = int(line.split("pass --batch-size ")[1].split()[0])
    assert 1 <= fits < 1000000000
    assert not out.exists()


def test_host_buffers_are_counted_per_image():
    """A 256² input and a 1024² reconstruction: the read-ahead copies of the one, the writers' ring of the other."""
    args = dict(multiple=1, input_hw=(256, 256), out_hw=(1024, 1024), latent_shape=(18, 512))
    per_image = memory.INPUT_COPIES * 256 * 256 * 3 + 18 * 512 * 4 + memory.OUTPUT_COPIES * 1024 * 1024 * 3
    memory.check_host(8, free=2 * 8 * per_image, **args)
    free = 10 * per_image
    fits = int(free * memory.USABLE_SHARE // per_image)
    with pytest.raises(UserError, match=rf"--batch-size 64 needs about .* pass --batch-size {fits} or less"):
        memory.check_host(64, free=free, **args)


def test_compiled_step_must_fit_the_devices(small_bundle):
    from e4e_jax import inversion, sharding

    model = inversion.load_e4e(str(small_bundle))
    mesh = sharding.data_mesh(jax.local_devices())
    batch = len(jax.local_devices()) * 4
    compiled, _ = inversion.compile_invert(model, mesh, batch, input_dtype=np.uint8, images="uint8")
    resident = memory.tree_bytes(model.variables)
    memory.check_compiled(compiled, batch, jax.local_devices(), resident)  # this machine holds a small batch
    memory.check_compiled(compiled, batch, jax.local_devices(), resident, free=2**40)
    with pytest.raises(UserError, match="even the smallest batch does not fit"):
        memory.check_compiled(compiled, batch, jax.local_devices(), resident, free=1)
