"""Tests of the latent edits (e4e_jax/inference/editing.py): expectations are computed here with numpy from
the published formulas (InterFaceGAN w + αn; GANSpace's official get_delta; SeFa's eigenvectors of
the column-normalised modulation weights), and on the official direction / PCA files."""

import jax
import numpy as np
import pytest

from e4e_jax.inference import editing
from tests.assets import require

ATOL = 1e-5


def _latents(b=3, n=6, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(b, n, d)).astype(np.float32)


def _pca(k=5, d=16, seed=1):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    comp = q[:k].astype(np.float32)  # orthonormal rows, like GANSpace's
    return editing.GanspacePCA(
        rng.normal(size=d).astype(np.float32), comp, rng.uniform(0.5, 3.0, size=k).astype(np.float32)
    )


# ------------------------------------------------------------------------------ InterFaceGAN


@pytest.mark.parametrize("per_layer", [False, True])
def test_interfacegan_moves_every_layer_by_alpha_v(per_layer):
    w = _latents()
    rng = np.random.default_rng(2)
    v = rng.normal(size=(1, 6, 16) if per_layer else (1, 16)).astype(np.float32)
    alpha = -2.5
    out = np.asarray(editing.interfacegan_edit(w, v, alpha))
    expected = w + alpha * (v[0][None] if per_layer else v[0][None, None])
    np.testing.assert_allclose(out, expected, atol=ATOL)
    # Each layer moved by exactly alpha * v (its own row for a per-layer direction).
    for i in range(6):
        row = v[0, i] if per_layer else v[0]
        np.testing.assert_allclose(out[:, i] - w[:, i], np.broadcast_to(alpha * row, (3, 16)), atol=ATOL)


def test_interfacegan_sweep_and_linearity():
    w, v = _latents(), np.random.default_rng(3).normal(size=(1, 16)).astype(np.float32)
    factors = editing.official_factor_range(-3, 3)
    assert factors == [-3, -2, -1, 0, 1, 2]
    sweep = np.asarray(editing.interfacegan_sweep(w, v, factors))
    assert sweep.shape == (6, 3, 6, 16)
    for f, s in zip(factors, sweep):
        np.testing.assert_allclose(s, np.asarray(editing.interfacegan_edit(w, v, f)), atol=ATOL)
    # LEC-style: edit(α) - edit(0) = α v, edit(0) = w.
    np.testing.assert_array_equal(sweep[3], w)
    np.testing.assert_allclose(sweep[5] - sweep[3], np.broadcast_to(2 * v[0], (3, 6, 16)), atol=ATOL)
    jitted = jax.jit(editing.interfacegan_edit)(w, v, 1.5)
    np.testing.assert_allclose(jitted, w + 1.5 * v[0], atol=ATOL)


def test_interfacegan_shape_errors():
    w = _latents()
    with pytest.raises(ValueError, match="does not fit"):
        editing.interfacegan_edit(w, np.zeros((1, 5, 16)), 1.0)  # 5 layers for 6
    with pytest.raises(ValueError, match="does not fit"):
        editing.interfacegan_edit(w, np.zeros((1, 15)), 1.0)
    with pytest.raises(ValueError, match="W\\+ latents"):
        editing.interfacegan_edit(w[:, 0], np.zeros((1, 16)), 1.0)


# ---------------------------------------------------------------------------------- GANSpace


def _ganspace_reference(w, pca, idx, start, end, strength):
    """The official get_delta/edit formula, written out per latent with numpy (float64)."""
    out = w.astype(np.float64).copy()
    for b in range(w.shape[0]):
        centered = w[b].astype(np.float64) - pca.mean[None]
        coord = np.sum(centered[0] * pca.comp[idx]) / pca.std[idx]
        delta = (strength - coord) * pca.comp[idx] * pca.std[idx]
        out[b, start:end] += delta
    return out


@pytest.mark.parametrize("idx, start, end, strength", [(0, 0, 6, 2.0), (3, 2, 4, -1.5), (4, 5, 6, 0.0)])
def test_ganspace_edit_matches_official_formula(idx, start, end, strength):
    w, pca = _latents(), _pca()
    out = np.asarray(editing.ganspace_edit(w, pca, idx, start, end, strength))
    np.testing.assert_allclose(out, _ganspace_reference(w, pca, idx, start, end, strength), atol=ATOL)
    untouched = [i for i in range(6) if not start <= i < end]
    np.testing.assert_array_equal(out[:, untouched], w[:, untouched])  # bit-exact elsewhere
    assert np.abs(out[:, start:end] - w[:, start:end]).max() > 1e-3  # and it did move
    if start == 0:  # 'strength' is absolute: layer 0's coordinate along the component becomes it
        np.testing.assert_allclose(editing.ganspace_coordinate(out, pca, idx), strength, atol=ATOL)


def test_ganspace_sweep_official_order_and_linearity():
    w, pca = _latents(), _pca()
    strengths = [-3.0, 0.0, 1.0, 4.0]
    sweep = np.asarray(editing.ganspace_sweep(w, pca, 1, 1, 5, strengths))
    assert sweep.shape == (4, 3, 6, 16)
    for s, e in zip(strengths, sweep):
        np.testing.assert_allclose(e, _ganspace_reference(w, pca, 1, 1, 5, s), atol=ATOL)
    # Linear in strength: edit(s1) - edit(s0) = (s1 - s0) * comp * std on the edited layers.
    step = pca.comp[1] * pca.std[1]
    np.testing.assert_allclose(
        sweep[3] - sweep[2],
        np.broadcast_to(
            np.where((np.arange(6) >= 1) & (np.arange(6) < 5), 1.0, 0.0)[None, :, None] * 3.0 * step, (3, 6, 16)
        ),
        atol=ATOL,
    )
    dirs = [(0, 0, 3, 1.0), (2, 3, 6, -2.0)]
    official = np.asarray(editing.ganspace_edit_official(w, pca, dirs))
    assert official.shape == (6, 6, 16)
    for b in range(3):  # latent-major, one output per (latent, direction), edits not combined
        for e, d in enumerate(dirs):
            np.testing.assert_allclose(official[2 * b + e], _ganspace_reference(w[b : b + 1], pca, *d)[0], atol=ATOL)


def test_ganspace_errors_and_from_dict():
    w, pca = _latents(), _pca()
    for start, end in [(3, 3), (4, 2), (-1, 2), (0, 7)]:
        with pytest.raises(ValueError, match="layer range"):
            editing.ganspace_edit(w, pca, 0, start, end, 1.0)
    with pytest.raises(ValueError, match="component index 5"):
        editing.ganspace_edit(w, pca, 5, 0, 2, 1.0)
    stored = {"mean": pca.mean[None], "comp": pca.comp[:, None], "std": pca.std}  # official shapes
    again = editing.GanspacePCA.from_dict(stored)
    for a, b in zip(again, pca):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="missing key\\(s\\) \\['std'\\]"):
        editing.GanspacePCA.from_dict({"mean": pca.mean, "comp": pca.comp})
    with pytest.raises(ValueError, match="inconsistent shapes"):
        editing.GanspacePCA.from_dict({"mean": pca.mean[:8], "comp": pca.comp, "std": pca.std})


# -------------------------------------------------------------------------------------- SeFa


def _tiny_synthesis(style_dim=6, seed=4):
    """mod_weight leaves of a size-16 generator (n_latent 6): conv1, convs_0..3, to_rgb1, to_rgbs_0..1."""
    rng = np.random.default_rng(seed)
    cin = {
        "conv1": 7,
        "to_rgb1": 7,
        "convs_0": 7,
        "convs_1": 5,
        "to_rgbs_0": 5,
        "convs_2": 5,
        "convs_3": 4,
        "to_rgbs_1": 4,
    }
    syn = {name: {"mod_weight": rng.normal(size=(style_dim, c)).astype(np.float32)} for name, c in cin.items()}
    return {"params": {"mapping": {}, "synthesis": syn}}


def test_sefa_hand_computed_2d():
    # Columns [3,0], [0.5,0] and [0,2] normalise to e1, e1, e2, so W Wᵀ = diag(2, 1).
    vals, vecs = editing.sefa_eigen([np.array([[3.0, 0.5], [0.0, 0.0]]), np.array([[0.0], [2.0]])])
    np.testing.assert_allclose(vals, [2.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(vecs, [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)
    # A rotated version: the leading direction is the shared (1, 1)/√2 of two columns.
    vals, vecs = editing.sefa_eigen([np.array([[1.0, 2.0, 1.0], [1.0, 2.0, -1.0]])])
    np.testing.assert_allclose(vals, [2.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(vecs[0], [2**-0.5, 2**-0.5], atol=1e-6)


def test_sefa_layer_selection():
    params = _tiny_synthesis()
    assert editing.synthesis_n_latent(params) == 6
    assert editing.parse_layers("all", 6) == [0, 1, 2, 3, 4, 5]
    assert editing.parse_layers("0-1", 6) == [0, 1]
    assert editing.parse_layers("4, 0,2-3", 6) == [0, 2, 3, 4]
    assert editing.parse_layers(3, 6) == [3]
    for bad in ("0-6", "7", [-1], "2-1", "x"):
        with pytest.raises(ValueError):
            editing.parse_layers(bad, 6)
    assert editing.sefa_modulations(params, range(6)) == [
        "conv1",
        "convs_0",
        "convs_1",
        "convs_2",
        "convs_3",
        "to_rgbs_1",
    ]
    assert editing.sefa_modulations(params, range(6), include_to_rgb=True) == [
        "conv1",
        "convs_0",
        "to_rgb1",
        "convs_1",
        "convs_2",
        "to_rgbs_0",
        "convs_3",
        "to_rgbs_1",
    ]


@pytest.mark.parametrize(
    "layers, names",
    [
        ("all", ["conv1", "convs_0", "convs_1", "convs_2", "convs_3", "to_rgbs_1"]),
        ("2-3", ["convs_1", "convs_2"]),
        ([0], ["conv1"]),
    ],
)
def test_sefa_factorize_matches_numpy_eigh(layers, names):
    params = _tiny_synthesis()
    syn = params["params"]["synthesis"]
    f = editing.sefa_factorize(params, layers)
    # Independent reference: stack Aᵀ of the chosen layers, unit columns, eigh of W Wᵀ.
    w = np.concatenate([syn[n]["mod_weight"].astype(np.float64) for n in names], axis=1)
    w /= np.linalg.norm(w, axis=0)
    m = w @ w.T
    ref_vals, ref_vecs = np.linalg.eigh(m)
    np.testing.assert_allclose(f.eigvals, ref_vals[::-1], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(f.eigvals) <= 1e-6)
    np.testing.assert_allclose(f.eigvecs @ f.eigvecs.T, np.eye(6), atol=1e-5)  # orthonormal
    np.testing.assert_allclose(np.abs(f.eigvecs @ ref_vecs[:, ::-1]), np.eye(6), atol=1e-4)  # same up to sign
    np.testing.assert_allclose(f.eigvecs @ m, f.eigvals[:, None] * f.eigvecs, atol=1e-4)  # v M = λ v
    assert f.layers == tuple(editing.parse_layers(layers, 6))


def test_sefa_on_real_generator_params():
    """Key names and shapes of the actual Flax generator are what the factorisation reads."""
    from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config

    cfg = StyleGAN2Config(size=16, channels=(8, 8, 4), style_dim=6, n_mlp=2)
    shapes = jax.eval_shape(
        lambda: Generator(cfg).init(
            jax.random.PRNGKey(0), np.zeros((1, cfg.n_latent, 6), np.float32), input_is_latent=True
        )
    )
    rng = np.random.default_rng(5)
    variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    f = editing.sefa_factorize(variables, "all")
    assert f.layers == tuple(range(cfg.n_latent)) and f.eigvecs.shape == (6, 6)
    syn = variables["params"]["synthesis"]
    w = np.concatenate(
        [
            np.asarray(syn[n]["mod_weight"], np.float64)
            for n in ["conv1", "convs_0", "convs_1", "convs_2", "convs_3", "to_rgbs_1"]
        ],
        axis=1,
    )
    w /= np.linalg.norm(w, axis=0)
    np.testing.assert_allclose(f.eigvals, np.linalg.eigvalsh(w @ w.T)[::-1], rtol=1e-5, atol=1e-5)


def test_sefa_edit_changes_only_selected_layers_linearly():
    w = _latents(d=6)
    f = editing.sefa_factorize(_tiny_synthesis(), "1-3")
    v = f.eigvecs[0]
    out = np.asarray(editing.sefa_edit(w, v, f.layers, 4.0))
    expected = w.copy()
    expected[:, 1:4] += 4.0 * v
    np.testing.assert_allclose(out, expected, atol=ATOL)
    np.testing.assert_array_equal(out[:, [0, 4, 5]], w[:, [0, 4, 5]])
    sweep = np.asarray(editing.sefa_sweep(w, v, f.layers, [-2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(sweep[1], w)
    np.testing.assert_allclose(sweep[2] - sweep[1], np.asarray(editing.sefa_edit(w, v, [1, 2, 3], 3.0)) - w, atol=ATOL)
    np.testing.assert_allclose(sweep[0], np.asarray(editing.sefa_edit(w, v, [1, 2, 3], -2.0)), atol=ATOL)
    with pytest.raises(ValueError, match="out of range"):
        editing.sefa_edit(w, v, [6], 1.0)
    with pytest.raises(ValueError, match="does not fit"):
        editing.sefa_edit(w, np.ones(5), [1], 1.0)


# ----------------------------------------------------------------------------- official files


def _assets(sub):
    return require(sub)


def _torch_load(path):
    torch = pytest.importorskip("torch")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        return {k: v.numpy() for k, v in obj.items()}
    return obj.numpy()


@pytest.mark.parametrize("name, shape", [("age.pt", (512,)), ("smile.pt", (512,)), ("pose.pt", (18, 512))])
def test_official_interfacegan_directions(name, shape):
    path = _assets("interfacegan_directions") / name
    d = editing.load_interfacegan_direction(path)
    assert d.dtype == np.float32 and d.shape == shape
    np.testing.assert_array_equal(d, _torch_load(path).reshape(shape))  # an independent reader agrees
    w = _latents(b=2, n=18, d=512)
    out = np.asarray(editing.interfacegan_edit(w, d, 3.0))
    np.testing.assert_allclose(out - w, np.broadcast_to(3.0 * d, w.shape), atol=ATOL)


@pytest.mark.parametrize("name", ["ffhq_pca.pt", "cars_pca.pt"])
def test_official_ganspace_pca(name):
    path = _assets("ganspace_pca") / name
    pca = editing.load_ganspace_pca(path)
    ref = _torch_load(path)
    assert pca.mean.shape == (512,) and pca.comp.shape == (80, 512) and pca.std.shape == (80,)
    np.testing.assert_array_equal(pca.comp, ref["comp"].reshape(80, 512))
    np.testing.assert_array_equal(pca.mean, ref["mean"].reshape(512))
    np.testing.assert_array_equal(pca.std, ref["std"])
    np.testing.assert_allclose(np.linalg.norm(pca.comp, axis=1), 1.0, atol=1e-4)
    w = _latents(b=2, n=18, d=512) * 0.3 + pca.mean
    out = np.asarray(editing.ganspace_edit(w, pca, 7, 4, 12, 5.0))
    np.testing.assert_allclose(out, _ganspace_reference(w, pca, 7, 4, 12, 5.0), atol=1e-4)
    from_zero = editing.ganspace_edit(w, pca, 7, 0, 18, 5.0)
    np.testing.assert_allclose(editing.ganspace_coordinate(from_zero, pca, 7), 5.0, atol=1e-4)


def test_loaders_reject_the_wrong_file_kind():
    pca_path = _assets("ganspace_pca") / "ffhq_pca.pt"
    dir_path = _assets("interfacegan_directions") / "age.pt"
    with pytest.raises(ValueError, match="ffhq_pca.pt.*single saved tensor"):
        editing.load_interfacegan_direction(pca_path)
    with pytest.raises(ValueError, match="age.pt.*mean/comp/std"):
        editing.load_ganspace_pca(dir_path)
