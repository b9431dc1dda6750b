"""`edit` and `synthesize` with inputs that are not what they claim (issue 30, items 3-5; issue 24, items 4,
9 and 11): latents of the wrong type, directions of the wrong size or all zeros, absurd strengths and batch
sizes, forged .npy headers, an --output whose suffix lies; and what a good edit writes (named images, a
labelled grid). Each refusal is one `error:` line, exit status 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from e4e_jax.cli import main as cli_main
from e4e_jax.errors import UserError
from e4e_jax.inference import render
from e4e_jax.runtime import memory
from tests import tiny_bundles
from tests.tiny_bundles import GEN_CFG, error_line


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit_inputs")
    tiny_bundles.save_generator(root / "g")
    np.save(root / "w.npy", tiny_bundles.latents(2))
    return root


def _edit(g, out, *extra, latents=None):
    return ["edit", "--model", str(g / "g"), "--latents", str(latents or g / "w.npy"), "--output", str(out), *extra]


def _synth(g, out, *extra, latents=None):
    return [
        "synthesize",
        "--model",
        str(g / "g"),
        "--latents",
        str(latents or g / "w.npy"),
        "--output",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    "values, kind",
    [
        (np.ones((2, GEN_CFG.n_latent, 512), bool), "bool"),
        (tiny_bundles.latents(2) + 1j, "complex64"),
        (np.ones((2, GEN_CFG.n_latent, 512), np.int64), "int64"),
    ],
    ids=["bool", "complex", "int"],
)
def test_latents_that_are_not_real_floats_are_refused(g, tmp_path, capsys, values, kind):
    np.save(tmp_path / "odd.npy", values)
    for argv in (
        _synth(g, tmp_path / "s.npy", latents=tmp_path / "odd.npy"),
        _edit(g, tmp_path / "e", "--sefa", "0", "--strengths", "1", latents=tmp_path / "odd.npy"),
    ):
        assert cli_main(argv) == 2
        line = error_line(capsys)
        assert f"holds {kind} values" in line and "float32" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.npy"]


def test_directions_must_fit_the_generator_and_move_something(g, tmp_path, capsys):
    torch.save(torch.randn(1, 256), tmp_path / "narrow.pt")  # styles of 256, this generator's have 512
    torch.save(torch.randn(1, 18, 512), tmp_path / "ffhq_layers.pt")  # 18 layers; this generator has 6
    torch.save(torch.zeros(1, 512), tmp_path / "zero.pt")
    torch.save(torch.randn(1, 512), tmp_path / "any.pt")  # one step for every layer: fits any 512-d generator
    cases = {
        "narrow.pt": "direction of shape (256,) does not fit this generator's W+ codes (6, 512)",
        "ffhq_layers.pt": "direction of shape (18, 512) does not fit this generator's W+ codes (6, 512)",
        "zero.pt": "the direction is all zeros",
    }
    for name, expected in cases.items():
        argv = _edit(g, tmp_path / "out", "--interfacegan", str(tmp_path / name), "--strengths", "1")
        assert cli_main(argv) == 2, name
        line = error_line(capsys)
        assert name in line and expected in line, line
    assert not (tmp_path / "out").exists()
    assert cli_main(_edit(g, tmp_path / "out", "--interfacegan", str(tmp_path / "any.pt"), "--strengths", "1")) == 0


def test_absurd_strengths_are_refused(g, tmp_path, capsys):
    for method in (["--sefa", "0"], ["--interfacegan", str(tmp_path / "d.pt")]):
        torch.save(torch.randn(1, 512), tmp_path / "d.pt")
        assert cli_main(_edit(g, tmp_path / "o", *method, "--strengths", "-3", "1e30")) == 2
        line = error_line(capsys)
        assert "--strengths 1e+30" in line and "±100" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt"]


def test_synthesize_output_suffix_must_say_npy(g, tmp_path, capsys):
    assert cli_main(_synth(g, tmp_path / "x.png")) == 2
    line = error_line(capsys)
    assert "x.png" in line and "must end in .npy" in line and "--png" in line, line
    assert not list(tmp_path.iterdir())
    assert cli_main(_synth(g, tmp_path / "x.NPY")) == 0 and np.load(tmp_path / "x.NPY").shape == (2, 16, 16, 3)


def test_a_batch_larger_than_the_data_renders_the_data(g, tmp_path):
    """--batch-size 1000000000: the batch is cut to the rows there are (not 10^9 padded rows allocated)."""
    huge = "1000000000"
    assert cli_main(_synth(g, tmp_path / "a.npy", "--batch-size", huge)) == 0
    assert cli_main(_synth(g, tmp_path / "b.npy", "--batch-size", "2")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert cli_main(_edit(g, tmp_path / "e", "--sefa", "0", "--strengths", "1", "--batch-size", huge)) == 0
    assert len(list((tmp_path / "e" / "images").glob("*.png"))) == 2


def test_batches_that_cannot_fit_are_refused_before_allocating():
    """The estimate for 10^9 rendered images is far beyond any machine: one message, nothing allocated."""
    with pytest.raises(UserError, match=r"--batch-size 1000000000 \(1000000000 images of 16x16.*pass a smaller"):
        render.check_batch_fits(GEN_CFG, 10**9, 10**9)
    with pytest.raises(UserError, match="needs about 2.0 GiB of memory, more than the 1.0 GiB available; fix it"):
        memory.require_room(2 * 1024**3, "this", "fix it", available=1024**3)
    memory.require_room(1024, "this", "fix it", available=2048)
    assert memory.available_bytes() is None or memory.available_bytes() > 0


def test_a_forged_npy_header_is_refused_before_allocating(g, tmp_path, capsys):
    """A 200-byte .npy whose header claims (10^8, 6, 512) float32 (1.1 TiB)."""
    fake = tmp_path / "forged.npy"
    with open(fake, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**8, GEN_CFG.n_latent, 512)}
        )
        f.write(b"\0" * 200)
    for argv in (
        _synth(g, tmp_path / "s.npy", latents=fake),
        _edit(g, tmp_path / "e", "--sefa", "0", "--strengths", "1", latents=fake),
    ):
        assert cli_main(argv) == 2
        line = error_line(capsys)
        assert "forged.npy" in line and "(100000000, 6, 512)" in line and "truncated or damaged" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forged.npy"]


def test_edit_names_images_after_their_sources_and_labels_the_grid(g, tmp_path):
    inv = tmp_path / "inv"
    inv.mkdir()
    np.save(inv / "latents.npy", tiny_bundles.latents(2))
    photos = []
    for i, name in enumerate(("portrait.png", "beach day.jpg")):
        photos.append(tmp_path / name)
        Image.fromarray(np.full((24, 24, 3), 90 * i, np.uint8)).save(photos[-1])
    (inv / "files.txt").write_text("".join(f"{p}\n" for p in photos))
    out = tmp_path / "e"
    assert cli_main(_edit(g, out, "--sefa", "0", "--strengths", "-2", "2", latents=inv)) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "00000_portrait_s+2.png",
        "00000_portrait_s-2.png",
        "00001_beach day_s+2.png",
        "00001_beach day_s-2.png",
    ]
    grid = np.asarray(Image.open(out / "grid.png").convert("RGB"))
    cell = 128  # the 16x16 generator's cells, enlarged to at least GRID_MIN_CELL
    body = 2 * (cell + 2) + 2
    assert grid.shape[1] == 4 * (cell + 2) + 2  # source | inversion | -2 | +2
    band = grid[: grid.shape[0] - body]
    assert 10 < band.shape[0] < cell  # a header band above the rows ...
    for j in range(4):  # ... with dark text over every column
        column = band[:, 2 + j * (cell + 2) : 2 + j * (cell + 2) + cell]
        assert (column.min(axis=-1) < 100).sum() > 20, j
    source = grid[grid.shape[0] - body + 2 :][:cell, 2 : 2 + cell]
    assert np.abs(source.astype(int) - 0).max() <= 1  # row 0's source: the black portrait, not a blank cell
