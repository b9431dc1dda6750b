"""The one editing API behind `e4e-jax studio` (and the latent arithmetic of `e4e-jax edit`):

    editor = Editor("model")                      # loads the bundle; compiles every shape it uses, once
    x = editor.prepare("photo.jpg")               # the encoder's input: as `e4e-jax invert [--align]` reads it
    inv = editor.invert(x.pixels)                 # inv.latent (n_latent, 512) float32, inv.image uint8
    w = editor.edit(inv.latent, {"age": 3.0})     # directions.apply: the edit `e4e-jax edit` makes
    img = editor.render(w)                        # uint8 (H, W, 3): the generator's frame at full size

Same preprocessing and kernels as `e4e-jax invert`: a file is read by `data.folder.load_pixels` (official
resize) or, for face domains, aligned by `alignment.Aligner` (largest face, FFHQ crop at `align_size`) and
resized by `alignment.resize_for_encoder`, as `invert --align` does; the inversion is the kernel of the
bundle's kind (`inverters.kernel`, as `invert` takes it) on one device at batch 1, lowered as
`inversion.compile_for_batch` lowers it, so a latent equals `e4e-jax invert --batch-size 1`'s bit for bit.
Edits are `directions.apply` (host numpy).

Every function is compiled ahead of time at construction (`jit(...).lower(...).compile()`) for the shapes
used: inversion, full-size and preview renders of one latent, a preview strip of STRIP_LEN latents, a
random sample, the reconstruction's L2 (and LPIPS): a call never compiles, and a call of another shape is
an error rather than a silent compile. Bundle kinds (`inverters.KINDS`): 'e4e' (e4e, pSp or W encoders)
and 'restyle' (its default iterations; the last iteration's latents, as `invert` writes them).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import bundle, directions, editing, evaluation, inversion, inverters, sharding
from e4e_jax.errors import UserError

PREVIEW_SIZE = 512  # longer side of the live preview (px): a quarter of the bytes of a 1024² frame
STRIP_LEN = 7  # images in a strength strip (odd: the unedited latent in the middle)
DEFAULT_ALIGN_SIZE = 1024  # as `e4e-jax invert --align-size`


class Prepared(NamedTuple):
    """An image ready to invert: `pixels` uint8 (h, w, 3) at the encoder's input size; `crop` the aligned
    face (uint8 (S, S, 3)) when the image was aligned, else None."""

    pixels: np.ndarray
    crop: Optional[np.ndarray]


class Inversion(NamedTuple):
    """latent (n_latent, D) float32 and its reconstruction `image` uint8 (H, W, 3), as invert writes it."""

    latent: np.ndarray
    image: np.ndarray


# ----------------------------------------------------------------------------- bundle kinds
def _bundle_kind(path: str) -> str:
    kind = bundle.read_config(path)["kind"]
    if kind not in inverters.KINDS:
        raise UserError(f"{path} holds a {kind!r} bundle; the editor inverts with one of {sorted(inverters.KINDS)}")
    return kind


# ----------------------------------------------------------------------------- the editor
@dataclasses.dataclass
class Timings:
    """Seconds spent at construction: loading the bundle(s) and compiling every function."""

    load_s: float = 0.0
    compile_s: float = 0.0


class Editor:
    """Invert, edit and render with one bundle (module docstring).

    model: an 'e4e' (or 'restyle') bundle. dtype / modulation: as `e4e-jax invert`.
    directions_dir: InterFaceGAN / GANSpace files (`directions.load_folder`); the generator's SeFa
      directions (`sefa_count`) are always there. align: FFHQ-align photos first (None: for face domains).
    lpips: an 'lpips' bundle, to report the reconstruction's LPIPS beside its L2.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        dtype: str = "float32",
        modulation: str = "auto",
        directions_dir: Optional[str | os.PathLike] = None,
        sefa_count: int = directions.SEFA_COUNT,
        align: Optional[bool] = None,
        align_size: int = DEFAULT_ALIGN_SIZE,
        landmarks: Optional[str] = None,
        lpips: Optional[str | os.PathLike] = None,
        preview_size: int = PREVIEW_SIZE,
    ):
        t0 = time.perf_counter()
        self.path = str(model)
        self.kind = _bundle_kind(self.path)
        self.mesh = sharding.data_mesh(jax.local_devices()[:1])
        self._repl = sharding.replicated(self.mesh)
        # The kernel `e4e-jax invert` compiles for this bundle's kind (inverters.py): a ReStyle bundle runs
        # its default iterations and keeps the last one's latents.
        self.model = inverters.load(self.path, dtype=dtype, modulation=modulation)
        kernel = inverters.kernel(self.model, self.mesh, images="uint8")
        invert_fn, variables = kernel.fn, kernel.variables
        self.variables = sharding.replicate(variables, self.mesh)
        cfg = self.model.gen_config
        self.n_latent, self.style_dim = cfg.n_latent, cfg.style_dim
        self.align = self.model.domain == "ffhq" if align is None else bool(align)
        self._aligner = self._make_aligner(align_size, landmarks) if self.align else None
        self._lock = threading.Lock()  # dlib's detector is not documented as thread-safe
        self.directions: dict[str, directions.Direction] = {}
        self.notes: list[str] = []
        if directions_dir is not None:
            found, self.notes = directions.load_folder(directions_dir, self.n_latent, self.style_dim)
            self.directions.update((d.name, d) for d in found)
        gen_params = variables["generator"]["params"]
        for d in directions.sefa_directions(gen_params, self.n_latent, sefa_count):
            self.directions.setdefault(d.name, d)
        self._lpips = bundle.load(lpips, "lpips") if lpips is not None else None
        self._lpips_v = jax.device_put(self._lpips[1], self._repl) if self._lpips is not None else {}
        self.timings = Timings(load_s=time.perf_counter() - t0)
        t1 = time.perf_counter()
        self._compile(invert_fn, preview_size)
        self.timings.compile_s = time.perf_counter() - t1

    # -- construction ----------------------------------------------------------------------------
    @staticmethod
    def _make_aligner(size: int, landmarks: Optional[str]):
        from e4e_jax import alignment

        return alignment.Aligner(size, landmarks).load()  # AlignmentUnavailable (a UserError) without dlib

    def _compile(self, invert_fn, preview_size: int) -> None:
        model, v, repl = self.model, self.variables, self._repl
        full = inversion.crop_output(model, jnp.zeros((1, model.gen_config.size, model.gen_config.size, 3)))
        self.image_hw = full.shape[1:3]
        scale = min(1.0, preview_size / max(self.image_hw))
        self.preview_hw = tuple(max(1, round(s * scale)) for s in self.image_hw)

        def shaped(shape, dtype, sharding=repl):
            return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

        def render(out_hw):
            def f(variables, w):
                img = model.generator.apply(variables["generator"], w, input_is_latent=True, noise_mode="const")
                img = inversion.crop_output(model, img)
                return inversion.to_uint8(img if out_hw == self.image_hw else inversion.resize_output(img, out_hw))

            return jax.jit(f)

        def sample(variables, seed):
            z = jax.random.normal(jax.random.key(seed), (1, model.gen_config.mapping_in_dim))
            w = model.generator.apply(variables["generator"], z, method=type(model.generator).map)
            return jnp.repeat(w.astype(jnp.float32)[:, None], self.n_latent, axis=1)

        wplus = (self.n_latent, self.style_dim)
        x = shaped((1, *model.input_hw, 3), jnp.uint8, sharding.batch_sharding(self.mesh))
        self._invert = invert_fn.lower(v, x).compile()
        self._render = render(self.image_hw).lower(v, shaped((1, *wplus), jnp.float32)).compile()
        preview = render(self.preview_hw)
        self._preview = preview.lower(v, shaped((1, *wplus), jnp.float32)).compile()
        self._strip = preview.lower(v, shaped((STRIP_LEN, *wplus), jnp.float32)).compile()
        self._sample = jax.jit(sample).lower(v, shaped((), jnp.uint32)).compile()
        self._measure = self._measure_fn().lower(v, self._lpips_v, x, shaped((1, *wplus), jnp.float32)).compile()

    def _measure_fn(self):
        model, net = self.model, (self._lpips[0]["architecture"]["net"] if self._lpips else None)

        def measure(variables, lpips_variables, x, w):
            img = model.generator.apply(variables["generator"], w, input_is_latent=True, noise_mode="const")
            rec = evaluation.to_encoder_frame(img.astype(jnp.float32), model.input_hw)
            src = inversion.normalize_input(x)
            lp = evaluation.lpips_per_image(lpips_variables, src, rec, net) if net else jnp.full((1,), jnp.nan)
            return evaluation.l2_per_image(src, rec), lp

        return jax.jit(measure)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def input_hw(self) -> tuple[int, int]:
        return tuple(self.model.input_hw)

    @property
    def has_lpips(self) -> bool:
        return self._lpips is not None

    # -- input ----------------------------------------------------------------------------------
    def prepare(self, source: str | os.PathLike | np.ndarray) -> Prepared:
        """The encoder input of a photo file (as `e4e-jax invert` reads it: aligned first when `self.align`)
        or of a uint8 (H, W, 3) image (e.g. a sample; never aligned). UserError with the reason for a
        file that cannot be used (not an image, truncated, too large, no face)."""
        from e4e_jax.alignment import resize_for_encoder

        if isinstance(source, np.ndarray):
            return Prepared(resize_for_encoder(np.ascontiguousarray(source, np.uint8), self.input_hw), None)
        path = Path(source)
        if self._aligner is None:
            from e4e_jax.data import folder

            out = folder.load_pixels(path, self.input_hw)
            if isinstance(out, folder.Skipped):
                raise UserError(f"{path.name}: {out.reason}")
            return Prepared(out, None)
        with self._lock:
            found = self._aligner.align_or_skip(path, 1)  # the largest face, as invert --align's default
        if not isinstance(found, list):
            raise UserError(f"{path.name}: {found.reason}")
        crop = found[0].image
        return Prepared(resize_for_encoder(crop, self.input_hw), crop)

    # -- the four operations --------------------------------------------------------------------
    def invert(self, pixels: np.ndarray) -> Inversion:
        """uint8 (h, w, 3) at `input_hw` -> its latent and reconstruction (`e4e-jax invert --batch-size 1`)."""
        if pixels.shape != (*self.input_hw, 3) or pixels.dtype != np.uint8:
            raise ValueError(f"invert takes uint8 {(*self.input_hw, 3)} pixels, got {pixels.dtype} {pixels.shape}")
        x = sharding.shard_batch(pixels[None], self.mesh)
        latents, images = self._invert(self.variables, x)
        return Inversion(np.asarray(latents)[0], np.asarray(images)[0])

    def edit(self, latent: np.ndarray, edits: Mapping[Any, float]) -> np.ndarray:
        """`latent` (n, D) (or (B, n, D)) moved by every {direction name or Direction: strength} at once
        (`directions.apply`; strengths as `e4e-jax edit --strengths`). UserError for an unknown name or a
        strength beyond +/-editing.MAX_ABS_STRENGTH."""
        dirs = [self.direction(k) if isinstance(k, str) else k for k in edits]
        try:
            editing.check_strengths(edits.values(), "strength")
        except ValueError as e:
            raise UserError(str(e)) from None
        return directions.apply(latent, dirs, list(edits.values()))

    def direction(self, name: str) -> directions.Direction:
        if name not in self.directions:
            raise UserError(f"no direction named {name!r}; the directions are {', '.join(self.directions)}")
        return self.directions[name]

    def render(self, latent: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3): G(latent) with the stored noise, the domain's frame (cars: rows 64:448 of 512)."""
        return np.asarray(self._render(self.variables, self._put(latent)))[0]

    def preview(self, latent: np.ndarray) -> np.ndarray:
        """`render` at `preview_hw` (longer side at most PREVIEW_SIZE; resized on the device)."""
        return np.asarray(self._preview(self.variables, self._put(latent)))[0]

    def strip(self, latent: np.ndarray, name: str) -> tuple[np.ndarray, list[float]]:
        """Previews of `latent` edited along `name` at STRIP_LEN strengths spread over the direction's span
        around its neutral strength, side by side: (uint8 (h, STRIP_LEN * w, 3), the strengths)."""
        d = self.direction(name)
        base = directions.neutral(d, latent)
        strengths = [base + float(t) for t in np.linspace(-d.span, d.span, STRIP_LEN)]
        ws = np.stack([directions.apply(latent, [d], [s]) for s in strengths])
        cells = np.asarray(self._strip(self.variables, jax.device_put(ws, self._repl)))
        return np.concatenate(list(cells), axis=1), strengths

    def sample(self, seed: int) -> np.ndarray:
        """The W+ latent (n, D) of the generator's sample of `seed` (z ~ N(0, I) through its mapping)."""
        return np.asarray(self._sample(self.variables, jax.device_put(np.uint32(seed), self._repl)))[0]

    def distances(self, pixels: np.ndarray, latent: np.ndarray) -> tuple[float, float]:
        """(L2, LPIPS) between the encoder input and G(latent) in the encoder's frame, as `e4e-jax evaluate`
        measures them on the generator's output; LPIPS is NaN without an lpips bundle."""
        x = sharding.shard_batch(pixels[None], self.mesh)
        l2, lp = self._measure(self.variables, self._lpips_v, x, self._put(latent))
        return float(np.asarray(l2)[0]), float(np.asarray(lp)[0])

    def _put(self, latent: np.ndarray) -> jax.Array:
        w = np.asarray(latent, np.float32).reshape(1, self.n_latent, self.style_dim)
        return jax.device_put(w, self._repl)
