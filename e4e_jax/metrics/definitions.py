"""The e4e paper's evaluation metrics (Tov et al. 2021, §5 and appendix), as pure functions.

Images are NHWC float arrays in [-1, 1]; latents are W+ codes (B, n, D) with latent_avg already added.
Sources of the definitions (omertov/encoder4editing unless said):

- Distortion (`scripts/calc_losses_on_images.py`): per image, L2 = torch MSELoss, i.e. the mean over
  pixels and channels of (x - y)^2 on [-1, 1] images, and LPIPS(alex) (e4e's criteria.lpips); both are
  computed on 256x256 images (192x256 for cars) one image at a time, then averaged over images.
- LEC, latent editing consistency (paper Eq. 8; `metrics/LEC.py`):
      LEC(f) = E_x || E(x) - f^{-1}(E(G(f(E(x))))) ||_2
  with E(x) = encoder(x) + latent_avg, G's output pooled to 256x256 (pSp face_pool; cars cropped to rows
  32:224), f a latent edit (InterFaceGAN: w + a·v), the norm over the whole (n, 512) code, and the mean
  taken after dropping values outside the [1st, 99th] percentiles (`_filter_outliers`).
- Latent recovery, the "E(G(w)) distance": E_w || E(G(w)) - w ||_2 over w = mapping(z), z ~ N(0, I),
  broadcast to W+; same norm as LEC.
- Latent variation (how far a W+ code is from lying in W, paper §3-4, the "variation between the
  style codes"): mean over layers of || w_i - mean_j w_j ||_2 per image. The paper's text was not
  available to this implementation, so this is our definition, not a quotation; `delta_norm` (mean
  over i >= 1 of || w_i - w_0 ||_2, the Δ_i of the e4e regulariser) is reported with it.
- FID (pytorch-fid): Inception-v3 pool3 features (e4e_jax.models.inception), mean and unbiased
  covariance, d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}); the trace of the square root is
  computed with symmetric eigendecompositions (or exactly from the features when N <= D), which agrees
  with pytorch-fid's scipy sqrtm to 1e-15 for full-rank covariances (see `trace_sqrt_product`).
- SWD (Karras et al. 2018, ProGAN `metrics/sliced_wasserstein.py`): Laplacian pyramid (5-tap binomial
  filter, mirror borders) down to 16x16; per level 128 random 7x7x3 patches per image; descriptors
  normalised per channel over the set; 4 repeats x 128 random unit directions; sorted projections
  compared pointwise; reported x1e3 per level and averaged.

Running them over a set of images is `e4e_jax.metrics.evaluator.Evaluator` (batches in, report out); over a
folder or an `invert` output, `e4e_jax.jobs.evaluate.evaluate_folder` (the `evaluate` command).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import domains
from e4e_jax.models.inception import FIDInceptionV3
from e4e_jax.models.lpips import LPIPS
from e4e_jax.models.resampling import FACE_POOL_SIZE, pool_and_crop

Array = jax.Array | np.ndarray
LatentFn = Callable[[jax.Array], jax.Array]


# ------------------------------------------------------------------------------------------- framing
def to_encoder_frame(images: jax.Array, input_hw: tuple[int, int]) -> jax.Array:
    """Generator output (B, S, S, 3) -> what the encoder and the distortion metrics see (B, h, w, 3):
    AdaptiveAvgPool to 256x256 (pSp face_pool), then, for a shorter input (cars: 192x256), the centred
    rows (32:224, as the official coach and LEC.py). An encoder of another square input (the small
    configs, e.g. configs/tiny.py's 32x32) sees the output pooled to its size, the frame its training
    used (config.output_size)."""
    h, w = input_hw
    if (h, w) == FACE_POOL_SIZE:
        return pool_and_crop(images, FACE_POOL_SIZE)
    if h == w:
        return pool_and_crop(images, (h, w))
    if w != FACE_POOL_SIZE[1] or h > FACE_POOL_SIZE[0]:
        raise ValueError(
            f"encoder input {h}x{w} is neither square nor a centred 256-wide crop (cars: 192x256); "
            "its frame for the metrics is unknown"
        )
    top, bottom = domains.centred_rows(FACE_POOL_SIZE[0], h)
    return pool_and_crop(images, FACE_POOL_SIZE, (top, bottom))


# ---------------------------------------------------------------------------------------- distortion
def l2_per_image(x: Array, y: Array) -> jax.Array:
    """Mean squared error of each pair: x, y (B, H, W, C) -> (B,)."""
    return jnp.mean(jnp.square(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)), axis=(1, 2, 3))


def lpips_per_image(
    lpips_variables: Mapping, x: Array, y: Array, net: str = "alex", precision: Any = None
) -> jax.Array:
    """LPIPS v0.1 distance of each pair: x, y (B, H, W, 3) in [-1, 1] -> (B,)."""
    return LPIPS(net=net, precision=precision).apply(lpips_variables, jnp.asarray(x), jnp.asarray(y))


# ------------------------------------------------------------------------------------------- latents
def latent_distance(a: Array, b: Array) -> jax.Array:
    """|| a - b ||_2 over all layers and channels (official `.norm(2, dim=(1, 2))`): (B, n, D) -> (B,)."""
    d = jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(d), axis=(1, 2)))


def latent_variation(w: Array) -> jax.Array:
    """Mean over layers i of || w_i - mean_j w_j ||_2: (B, n, D) -> (B,). Zero iff the code lies in W."""
    w = jnp.asarray(w, jnp.float32)
    return jnp.mean(jnp.linalg.norm(w - jnp.mean(w, axis=1, keepdims=True), axis=-1), axis=1)


def delta_norm(w: Array) -> jax.Array:
    """Mean over layers i >= 1 of || w_i - w_0 ||_2 (e4e's Δ_i): (B, n, D) -> (B,)."""
    w = jnp.asarray(w, jnp.float32)
    return jnp.mean(jnp.linalg.norm(w[:, 1:] - w[:, :1], axis=-1), axis=1)


def sample_w(
    map_fn: Callable[[jax.Array], jax.Array],
    rng: jax.Array,
    n: int,
    z_dim: int,
    n_latent: int,
    w_avg: Array | None = None,
    truncation: float = 1.0,
) -> jax.Array:
    """W+ codes (n, n_latent, D) of w = map_fn(z), z ~ N(0, I) (n, z_dim), optionally truncated to w_avg."""
    w = map_fn(jax.random.normal(rng, (n, z_dim), jnp.float32))
    if truncation != 1.0:
        w = jnp.asarray(w_avg) + truncation * (w - jnp.asarray(w_avg))
    return jnp.repeat(w[:, None], n_latent, axis=1)


def latent_recovery_distances(encode: LatentFn, generate: LatentFn, w: Array) -> jax.Array:
    """|| E(G(w)) - w ||_2 per code: w (B, n, D) -> (B,). `generate` maps W+ codes to encoder-frame
    images, `encode` maps those back to W+ codes (latent_avg included)."""
    w = jnp.asarray(w, jnp.float32)
    return latent_distance(encode(generate(w)), w)


# ----------------------------------------------------------------------------------------------- LEC
def lec_distances(
    encode: LatentFn,
    generate: LatentFn,
    x: Array | None,
    edit: LatentFn,
    inverse_edit: LatentFn,
    codes: Array | None = None,
) -> jax.Array:
    """|| E(x) - f^{-1}(E(G(f(E(x))))) ||_2 per image (paper Eq. 8): x (B, h, w, 3) -> (B,).
    `codes` = E(x) (B, n, D) may be passed instead of x when already computed."""
    codes = encode(jnp.asarray(x)) if codes is None else jnp.asarray(codes)
    return latent_distance(codes, inverse_edit(encode(generate(edit(codes)))))


def interfacegan_pair(direction: Array, factor: float) -> tuple[LatentFn, LatentFn]:
    """f(w) = w + factor·v and its inverse, v of shape (D,) (all layers) or (n, D) (metrics/LEC.py uses
    the age direction with factor 3)."""
    v = jnp.asarray(direction, jnp.float32) * jnp.float32(factor)
    return (lambda w: w + v), (lambda w: w - v)


def ganspace_pair(comp: Array, std: float, start: int, end: int, strength: float) -> tuple[LatentFn, LatentFn]:
    """Translation by `strength` standard deviations along a GANSpace component (D,) on layers start:end.

    The official `ganspace.edit` *sets* the layer-0 coordinate to `strength`, which is not a fixed
    translation and has no inverse; LEC needs an invertible f, so we use GANSpace's own edit form
    w + a·σ_k·v_k (Härkönen et al. 2020) on the chosen layers.
    """
    delta = jnp.asarray(comp, jnp.float32) * jnp.float32(std * strength)

    def shift(w, sign):
        mask = (jnp.arange(w.shape[1]) >= start) & (jnp.arange(w.shape[1]) < end)
        return w + sign * mask[None, :, None] * delta

    return (lambda w: shift(w, 1.0)), (lambda w: shift(w, -1.0))


def filter_outliers(values: Sequence[float]) -> np.ndarray:
    """Keep values within [1st percentile (lower), 99th percentile (higher)], as `LEC._filter_outliers`."""
    arr = np.asarray(values, np.float64)
    lo = np.percentile(arr, 1, method="lower")
    hi = np.percentile(arr, 99, method="higher")
    return arr[(lo <= arr) & (arr <= hi)]


def lec_score(distances: Sequence[float], group_size: int = 1) -> float:
    """LEC from per-image distances. metrics/LEC.py averages each batch (drop_last) first and filters
    the batch means; `group_size` reproduces that with its batch size (its default is 8); 1 filters
    per image."""
    d = np.asarray(distances, np.float64)
    if group_size > 1:
        n = (len(d) // group_size) * group_size
        if n == 0:
            raise ValueError(f"LEC: {len(d)} images are fewer than one group of {group_size}")
        d = d[:n].reshape(-1, group_size).mean(axis=1)
    return float(filter_outliers(d).mean())


# ----------------------------------------------------------------------------------------------- FID
def inception_features(inception_variables: Mapping, images: Array, precision: Any = None) -> jax.Array:
    """pool3 features (B, 2048) of images (B, H, W, 3) in [-1, 1] (mapped to pytorch-fid's [0, 1])."""
    x = (jnp.asarray(images, jnp.float32) + 1.0) / 2.0
    return FIDInceptionV3(precision=precision).apply(inception_variables, x)


def feature_statistics(features: Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64 (pytorch-fid: np.cov)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"FID statistics need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, method: str = "eigh", eps: float = 1e-6) -> float:
    """Tr (S1 S2)^{1/2} for covariances S1, S2 (D, D).

    'eigh' (default): Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}, a symmetric PSD matrix: two
    eigh calls, round-off negative eigenvalues clipped. 'sqrtm': pytorch-fid's code path, scipy.linalg.sqrtm
    of the non-symmetric product (retried with eps·I added to both if not finite; real part kept if the
    imaginary diagonal is < 1e-3). Measured (D = 2048, float64): both agree to 1e-15 relative for full-rank
    covariances (N = 3000); for rank-deficient ones (N = 3, 50) against the exact nuclear-norm value
    (`fid_from_features`) eigh was off by 2e-6 / 2e-7 relative, sqrtm by 2e-5 / 7e-7, and sqrtm was 2-10x slower.
    """
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    if method == "eigh":
        r = _psd_sqrt(s1)
        m = r @ s2 @ r
        return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None))))
    if method != "sqrtm":
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"FID: matrix square root has an imaginary component of "
                f"{np.max(np.abs(covmean.imag)):.3g}; use method='eigh'"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1: Array, s1: Array, mu2: Array, s2: Array, method: str = "eigh") -> float:
    """Fréchet distance of N(mu1, S1) and N(mu2, S2): ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr (S1 S2)^{1/2}."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2, method))


def fid_from_features(f1: Array, f2: Array, method: str = "eigh") -> float:
    """FID of two feature sets (N1, D), (N2, D).

    With fewer samples than dimensions (max(N1, N2) <= D), the covariances are S = AᵀA with A the centred
    features / sqrt(N - 1), and Tr (S1 S2)^{1/2} is exactly the nuclear norm of A1 A2ᵀ (N1, N2): the nonzero
    eigenvalues of A1ᵀA1 A2ᵀA2 are those of (A1 A2ᵀ)(A1 A2ᵀ)ᵀ. That route is exact and cheap; otherwise
    the (D, D) statistics go through `frechet_distance(method)`.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    if max(len(f1), len(f2)) > f1.shape[1] or f1.shape[1] != f2.shape[1]:
        return frechet_distance(mu1, s1, mu2, s2, method=method)
    a1 = (f1 - mu1) / math.sqrt(len(f1) - 1)
    a2 = (f2 - mu2) / math.sqrt(len(f2) - 1)
    tr = float(np.sum(np.linalg.svd(a1 @ a2.T, compute_uv=False)))
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2 * tr)


# ----------------------------------------------------------------------------------------------- SWD
SWD_NHOOD, SWD_PER_IMAGE, SWD_REPEATS, SWD_DIRS, SWD_MIN_RES = 7, 128, 4, 128, 16
_BINOMIAL = np.float32([1, 4, 6, 4, 1]) / 16  # outer product = ProGAN's 5x5 filter / 256


def _filter_mirror(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable 5-tap filter over H and W with scipy.ndimage 'mirror' borders (numpy 'reflect')."""
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (2, 2)
        xp = jnp.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        x = sum(float(t) * jax.lax.slice_in_dim(xp, k, k + n, axis=axis) for k, t in enumerate(taps))
    return x


def pyr_down(x: jax.Array) -> jax.Array:
    """cv2.pyrDown as ProGAN: blur then keep even rows/columns. (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C)."""
    return _filter_mirror(x, _BINOMIAL)[:, ::2, ::2]


def pyr_up(x: jax.Array) -> jax.Array:
    """cv2.pyrUp as ProGAN: zero-insert to (2H, 2W), then blur with 4x the filter."""
    b, h, w, c = x.shape
    up = jnp.zeros((b, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2].set(x)
    return _filter_mirror(up, _BINOMIAL * 2)


def laplacian_pyramid(x: Array, num_levels: int) -> list[jax.Array]:
    """[band-pass levels ..., low-pass residual]; level k has size H / 2^k. x: (B, H, W, C) float."""
    levels = [jnp.asarray(x, jnp.float32)]
    for _ in range(1, num_levels):
        levels.append(pyr_down(levels[-1]))
        levels[-2] = levels[-2] - pyr_up(levels[-1])[:, : levels[-2].shape[1], : levels[-2].shape[2]]
    return levels


def swd_resolutions(height: int) -> list[int]:
    """Pyramid heights used by ProGAN's SWD: H, H/2, ... while >= 16."""
    res, out = height, []
    while res >= SWD_MIN_RES:
        out.append(res)
        res //= 2
    return out


def patch_descriptors(
    level: Array, rng: np.random.Generator, nhood_size: int = SWD_NHOOD, per_image: int = SWD_PER_IMAGE
) -> np.ndarray:
    """`per_image` random nhood x nhood patches of every image: (B, h, w, C) -> (B·per_image, n, n, C)."""
    level = np.asarray(level, np.float32)
    b, h, w, _ = level.shape
    r = nhood_size // 2
    n = b * per_image
    cx = rng.integers(r, w - r, size=n)
    cy = rng.integers(r, h - r, size=n)
    off = np.arange(-r, r + 1)
    img = np.repeat(np.arange(b), per_image)
    return level[img[:, None, None], (cy[:, None] + off)[:, :, None], (cx[:, None] + off)[:, None, :]]


def normalize_descriptors(desc: np.ndarray) -> np.ndarray:
    """Zero mean, unit std per channel over the whole set, flattened: (N, n, n, C) -> (N, n·n·C)."""
    desc = np.asarray(desc, np.float32)
    desc = desc - desc.mean(axis=(0, 1, 2), keepdims=True)
    desc = desc / desc.std(axis=(0, 1, 2), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, repeats: int = SWD_REPEATS, dirs_per_repeat: int = SWD_DIRS
) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projected sets (N, K)."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"SWD needs two descriptor sets of equal shape, got {a.shape} and {b.shape}")
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs = (dirs / np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))).astype(np.float32)
        pa, pb = np.sort((a @ dirs).T, axis=1), np.sort((b @ dirs).T, axis=1)  # rows: directions
        results.append(np.mean(np.abs(pa - pb)))
    return float(np.mean(results))


@partial(jax.jit, static_argnums=1)
def _uint8_pyramid(images: jax.Array, num_levels: int) -> list[jax.Array]:
    """Laplacian pyramid of [-1, 1] images quantised to 0..255 (ProGAN feeds uint8 images)."""
    x = jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255)
    return laplacian_pyramid(x, num_levels)


class SWDDescriptors:
    """Collects the per-level patch descriptors of one image set, batch by batch.

    `add(images)`: (B, H, W, 3) in [-1, 1]; quantised to 8 bits as ProGAN's uint8 inputs.
    """

    def __init__(self, height: int, seed: int = 0):
        self.resolutions = swd_resolutions(height)
        if not self.resolutions:
            raise ValueError(f"SWD needs images at least {SWD_MIN_RES} pixels high, got {height}")
        self.rng = np.random.default_rng(seed)
        self.levels: list[list[np.ndarray]] = [[] for _ in self.resolutions]
        self.count = 0

    def add(self, images: Array) -> None:
        for k, level in enumerate(_uint8_pyramid(jnp.asarray(images), len(self.resolutions))):
            self.levels[k].append(patch_descriptors(level, self.rng))
        self.count += int(images.shape[0])

    def finalize(self) -> list[np.ndarray]:
        return [normalize_descriptors(np.concatenate(d)) for d in self.levels]


def swd(a: SWDDescriptors, b: SWDDescriptors, seed: int = 0) -> dict[str, float]:
    """SWD x 1e3 per resolution ('SWDx1e3_{res}') and their mean ('SWDx1e3_avg') of two image sets."""
    if a.resolutions != b.resolutions or a.count != b.count:
        raise ValueError(
            f"SWD compares sets of equal size and resolution: {a.count} images at "
            f"{a.resolutions[0]} vs {b.count} at {b.resolutions[0]}"
        )
    rng = np.random.default_rng(seed)
    dist = [1e3 * sliced_wasserstein(da, db, rng) for da, db in zip(a.finalize(), b.finalize())]
    out = {f"SWDx1e3_{res}": d for res, d in zip(a.resolutions, dist)}
    out["SWDx1e3_avg"] = float(np.mean(dist))
    return out
