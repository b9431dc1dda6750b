"""The one editing API (`e4e_jax/editor.py`, `e4e_jax/directions.py`) without a page: the combined edit
against the official per-method edits, `e4e-jax edit` computing the same latents, inversion equal to
`e4e-jax invert --batch-size 1` on a non-face bundle, W encoder bundles, the page's session logic, and
refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from e4e_jax import bundle, directions, editing
from e4e_jax.cli import main as cli_main
from e4e_jax.errors import UserError
from e4e_jax.models.encoder_types import EncoderConfig
from e4e_jax.models.stylegan2 import init_variables
from tests import tiny_bundles
from tests.assets import E4E_ASSETS, needs_assets
from tests.tiny_bundles import ENC_SIZES, GEN_CFG

N, D = GEN_CFG.n_latent, 512


def _pca(seed=0, k=6):
    rng = np.random.default_rng(seed)
    comp = np.linalg.qr(rng.standard_normal((D, k)))[0].T.astype(np.float32)
    return editing.GanspacePCA(
        rng.standard_normal(D).astype(np.float32), comp, rng.uniform(0.5, 2, k).astype(np.float32)
    )


def _dirs():
    rng = np.random.default_rng(1)
    factors = editing.sefa_factorize(init_variables(GEN_CFG, jax.random.key(0))["params"], "1-3")
    return [
        directions.interfacegan("a", rng.standard_normal(D), N, D, "a"),
        directions.interfacegan("p", rng.standard_normal((N, D)), N, D, "p"),
        directions.ganspace("g", _pca(), 2, 1, 4, N),
        directions.sefa("s", factors, 0, N),
    ]


def test_one_edit_is_the_official_edit_of_its_method():
    w = tiny_bundles.latents(3)
    a, p, g, s = _dirs()
    np.testing.assert_allclose(directions.apply(w, [a], [2.5]), editing.interfacegan_edit(w, a.step[0], 2.5), atol=1e-6)
    np.testing.assert_allclose(directions.apply(w, [p], [-1.0]), editing.interfacegan_edit(w, p.step, -1.0), atol=1e-6)
    np.testing.assert_allclose(
        directions.apply(w, [g], [3.0]), editing.ganspace_edit(w, _pca(), 2, 1, 4, 3.0), atol=1e-5, rtol=1e-6
    )
    factors = editing.sefa_factorize(init_variables(GEN_CFG, jax.random.key(0))["params"], "1-3")
    np.testing.assert_allclose(
        directions.apply(w, [s], [4.0]), editing.sefa_edit(w, factors.eigvecs[0], factors.layers, 4.0), atol=1e-6
    )


def test_combined_edits_commute_and_a_batch_equals_its_rows():
    w = tiny_bundles.latents(4)
    dirs, strengths = _dirs(), [1.5, -2.0, 4.0, 3.0]
    together = directions.apply(w, dirs, strengths)
    np.testing.assert_array_equal(together[2], directions.apply(w[2], dirs, strengths))  # bit for bit
    np.testing.assert_allclose(together, directions.apply(w, dirs[::-1], strengths[::-1]), atol=1e-6)
    # Each GANSpace step is measured on the unedited latent: the sum of the single edits' deltas.
    deltas = sum(directions.apply(w, [d], [s]) - w for d, s in zip(dirs, strengths))
    np.testing.assert_allclose(together, w + deltas, atol=1e-5)
    # Strength 0 (linear) and the neutral strength (GANSpace) move nothing; untouched layers stay exact.
    np.testing.assert_array_equal(directions.apply(w, dirs[:1], [0.0]), w)
    g = dirs[2]
    np.testing.assert_allclose(directions.apply(w[1], [g], [directions.neutral(g, w[1])]), w[1], atol=1e-5)
    edited = directions.apply(w, [g], [7.0])
    np.testing.assert_array_equal(edited[:, [0, 4, 5]], w[:, [0, 4, 5]])
    with pytest.raises(ValueError, match="1 directions but 2 strengths"):
        directions.apply(w, [g], [1.0, 2.0])


@needs_assets
def test_direction_folder_names_what_it_leaves_out(tmp_path):
    import shutil

    for sub in ("interfacegan_directions", "ganspace_pca"):
        shutil.copytree(E4E_ASSETS / sub, tmp_path / sub)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    found, notes = directions.load_folder(tmp_path, N, D)
    names = [d.name for d in found]
    # age / smile fit any 512-d generator; ffhq_pca's named edits on layers < 6 (smile: PC46, 4-5) fit.
    assert {"age", "smile", "ganspace_smile"} <= set(names) and "pose" not in names
    assert any("pose.pt" in n and "(18, 512)" in n for n in notes), notes
    assert any("junk.pt" in n for n in notes), notes
    g = next(d for d in found if d.name == "ganspace_smile")
    assert g.kind == directions.GANSPACE and np.flatnonzero(np.abs(g.step).sum(1)).tolist() == [4]


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """A non-face e4e bundle (domain unknown, as the quickstart's): no alignment, the official resize."""
    root = tmp_path_factory.mktemp("editor")
    model = tiny_bundles.save_e4e(root / "model")
    cfg = bundle.read_config(model)
    arch = {**cfg["architecture"]}
    arch.pop("domain")
    _, variables = bundle.load(model, "e4e")
    bundle.save(root / "flat", "e4e", arch, variables)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), np.uint8)).save(photos / "noise.png")
    from e4e_jax.editor import Editor

    return root, Editor(root / "flat"), photos


def test_invert_is_the_invert_command_at_batch_one(flat, tmp_path):
    root, editor, photos = flat
    assert not editor.align and editor.input_hw == (256, 256)
    prepared = editor.prepare(photos / "noise.png")
    assert prepared.crop is None and prepared.pixels.dtype == np.uint8
    inv = editor.invert(prepared.pixels)
    argv = ["invert", "--model", str(root / "flat"), "--images", str(photos), "--output", str(tmp_path / "inv")]
    assert cli_main([*argv, "--batch-size", "1", "--image-format", "png"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "inv" / "latents.npy")[0], inv.latent)
    (saved,) = (tmp_path / "inv" / "inversions").glob("*.png")
    np.testing.assert_array_equal(np.asarray(Image.open(saved)), inv.image)
    # An array (a sample) is resized as a file of it would be, never aligned.
    sample = editor.render(editor.sample(7))
    np.testing.assert_array_equal(editor.prepare(sample).pixels.shape, (256, 256, 3))
    with pytest.raises(ValueError, match="invert takes uint8"):
        editor.invert(prepared.pixels[:100])


def test_edit_command_makes_the_editors_latents_and_images(flat, tmp_path):
    root, editor, _ = flat
    w = tiny_bundles.latents(2, seed=5)
    np.save(tmp_path / "w.npy", w)
    out = tmp_path / "e"
    argv = ["edit", "--model", str(root / "flat"), "--latents", str(tmp_path / "w.npy"), "--output", str(out)]
    assert cli_main([*argv, "--sefa", "2", "--strengths", "-3", "4"]) == 0
    edits = np.load(out / "latents.npy")
    for f, s in enumerate((-3.0, 4.0)):
        np.testing.assert_array_equal(edits[f], editor.edit(w, {"sefa_2": s}))
    img = np.asarray(Image.open(out / "images" / "00001_s+4.png"))
    np.testing.assert_array_equal(img, editor.render(edits[1, 1]))


def test_editor_refusals_and_strip(flat):
    root, editor, _ = flat
    w = tiny_bundles.latents(1)[0]
    with pytest.raises(UserError, match="no direction named 'nope'; the directions are sefa_0"):
        editor.edit(w, {"nope": 1.0})
    with pytest.raises(UserError, match="beyond ±100"):
        editor.edit(w, {"sefa_0": 1e3})
    strip, strengths = editor.strip(w, "sefa_1")
    assert strip.shape == (16, 16 * len(strengths), 3) and strengths[len(strengths) // 2] == 0
    l2, lp = editor.distances(editor.prepare(editor.render(w)).pixels, w)
    assert l2 >= 0 and np.isnan(lp)
    tiny_bundles.save_generator(root / "g")
    from e4e_jax.editor import Editor

    with pytest.raises(UserError, match="holds a 'stylegan2' bundle; the editor inverts with one of"):
        Editor(root / "g")


def test_session_logic_of_the_page(flat, tmp_path):
    from e4e_jax.studio import preview
    from e4e_jax.studio.session import Session, Studio

    root, editor, photos = flat
    studio = Studio(editor, photos, workdir=tmp_path / "work")
    assert studio.pickable() == ["noise.png"]
    s = Session()
    with pytest.raises(UserError, match="load a photo first"):
        studio.render_preview(s, [1.0])
    loaded = studio.load_path(s, photos / "noise.png")
    assert "noise: inverted in" in loaded.status and "L2" in loaded.status
    zeros = [0.0] * (len(studio.names) + 1)
    assert studio.edited(s, zeros) is s.latent  # every slider at 0: the inversion itself
    offsets = list(zeros)
    offsets[studio.names.index("sefa_0")] = 2.0
    data, seconds = studio.render_preview(s, offsets)
    assert data == preview.encode(editor.preview(editor.edit(s.latent, {"sefa_0": 2.0}))) and seconds > 0
    png, npy = studio.export(s, offsets)
    np.testing.assert_array_equal(np.load(npy), editor.edit(s.latent, {"sefa_0": 2.0})[None])
    assert png.endswith("noise_edited.png")
    np.save(tmp_path / "bad.npy", np.ones((3, 512), np.float32))
    with pytest.raises(UserError, match=r"bad.npy: direction of shape \(3, 512\) does not fit"):
        studio.set_custom(s, tmp_path / "bad.npy")
    np.save(tmp_path / "mine.npy", np.ones(512, np.float32))
    assert "InterFaceGAN" in studio.set_custom(s, tmp_path / "mine.npy")
    offsets[-1] = 1.0
    np.testing.assert_array_equal(studio.edited(s, offsets), editor.edit(s.latent, {"sefa_0": 2.0, s.custom: 1.0}))
    with pytest.raises(UserError, match="noise.png: not a readable image"):
        (tmp_path / "noise.png").write_text("text")
        studio.load_path(s, tmp_path / "noise.png")


def test_w_encoder_bundles_edit_too(tmp_path):
    from e4e_jax.editor import Editor

    enc = EncoderConfig(mode="w", n_styles=N, input_size=(64, 64), **ENC_SIZES)
    enc_vars = jax.jit(enc.build().init)(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
    arch = {"encoder": enc.to_dict(), "generator": GEN_CFG.to_dict()}
    latent_avg = np.zeros((N, D), np.float32)
    variables = {"encoder": enc_vars, "generator": init_variables(GEN_CFG, jax.random.key(0)), "latent_avg": latent_avg}
    bundle.save(tmp_path / "w", "e4e", arch, variables)
    editor = Editor(tmp_path / "w")
    inv = editor.invert(np.zeros((64, 64, 3), np.uint8))
    assert (inv.latent == inv.latent[0]).all()  # one w for every layer
    assert editor.render(editor.edit(inv.latent, {"sefa_0": 3.0})).shape == (16, 16, 3)


def test_restyle_bundles_invert_through_the_hook(tmp_path):
    """After the ReStyle branch is merged: a 'restyle' bundle inverts with its last iteration's latents."""
    restyle = pytest.importorskip("e4e_jax.restyle")
    make = pytest.importorskip("tests.test_restyle").make_restyle_bundle
    from e4e_jax.editor import Editor

    path = make(tmp_path / "r")
    editor = Editor(path)
    x = np.random.default_rng(0).integers(0, 255, (*editor.input_hw, 3), np.uint8)
    model = restyle.load_restyle(str(path))
    latents, _ = restyle.make_restyle_fn(model, images="none")(
        restyle.with_average_image(model, model.variables), x[None]
    )
    np.testing.assert_allclose(editor.invert(x).latent, np.asarray(latents)[-1, 0], atol=1e-5)
