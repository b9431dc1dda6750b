"""What the studio page does, without the page: one `Studio` (the Editor, the sliders, the session files)
and one `Session` per browser tab (its photo, latent and custom direction), kept by the page in gr.State.

Sliders hold *offsets* from each direction's neutral strength (`directions.neutral`: 0 for InterFaceGAN
and SeFa, the latent's own coordinate for GANSpace, whose official strength sets that coordinate), so
every slider at 0 is the inversion itself and a GANSpace slider moves the image continuously. A slider at
exactly 0 is left out of the edit; the others go to `Editor.edit` together as official strengths.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from e4e_jax import directions, fileio, generate
from e4e_jax.data import folder
from e4e_jax.editor import Editor
from e4e_jax.errors import UserError
from e4e_jax.images import save_png
from e4e_jax.studio import preview

CUSTOM = "custom"  # the name of the direction a tab uploads
LATENT_SUFFIX, EDITED_SUFFIX = "_latent.npy", "_edited.png"  # download names: STEM_latent.npy, STEM_edited.png


@dataclasses.dataclass
class Session:
    """One tab's state: the inverted latent (n, D) and what it came from; None before the first photo."""

    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    stem: str = "image"
    pixels: Optional[np.ndarray] = None  # the encoder input (uint8 (h, w, 3))
    latent: Optional[np.ndarray] = None
    custom: Optional[directions.Direction] = None


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A photo (or sample) inverted: the source shown (the aligned crop, or the encoder input), the
    reconstruction, the first preview and the status line."""

    source: np.ndarray
    inversion: np.ndarray
    preview: bytes
    status: str


class Studio:
    """The page's operations on one Editor; `images_dir`: photos offered for picking; session files
    (downloads) go under `workdir` (a new temporary folder by default)."""

    def __init__(self, editor: Editor, images_dir: Optional[Path] = None, workdir: Optional[Path] = None):
        self.editor = editor
        self.images_dir = images_dir
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="e4e-studio-"))
        self.names = list(editor.directions)  # one slider each, in this order, then the custom one

    # -- inputs ---------------------------------------------------------------------------------
    def pickable(self) -> list[str]:
        """The photos of `images_dir` (relative paths), as `e4e-jax invert --images` lists them."""
        if self.images_dir is None:
            return []
        return [p.relative_to(self.images_dir).as_posix() for p in folder.list_images(self.images_dir)]

    def load_path(self, session: Session, path: str | Path, name: Optional[str] = None) -> Loaded:
        """Invert the photo at `path` (an upload or a picked file; `name`: what the user called it)."""
        t0 = time.perf_counter()
        prepared = self.editor.prepare(path)
        src = prepared.crop if prepared.crop is not None else prepared.pixels
        what = "aligned face" if prepared.crop is not None else "image"
        return self._invert(session, Path(name or path).stem, prepared.pixels, src, what, t0)

    def load_sample(self, session: Session, seed: int) -> Loaded:
        """Invert the generator's sample of `seed` (its image read as a photo of it would be)."""
        t0 = time.perf_counter()
        image = self.editor.render(self.editor.sample(seed))
        return self._invert(session, f"sample{seed}", self.editor.prepare(image).pixels, image, "sample", t0)

    def _invert(self, session: Session, stem: str, pixels, source, what: str, t0: float) -> Loaded:
        inv = self.editor.invert(pixels)
        l2, lp = self.editor.distances(pixels, inv.latent)
        session.stem, session.pixels, session.latent = stem, pixels, inv.latent
        seconds = time.perf_counter() - t0
        dist = f"L2 {l2:.4f}" + (f" · LPIPS {lp:.4f}" if self.editor.has_lpips else "")
        status = f"{what} {stem}: inverted in {1000 * seconds:.0f} ms · reconstruction {dist}"
        return Loaded(source, inv.image, preview.encode(self.editor.preview(inv.latent)), status)

    def set_custom(self, session: Session, path: str | Path, name: Optional[str] = None) -> str:
        """Load an uploaded direction file as the tab's custom slider; its label. UserError naming the
        file when it is not a direction of this generator."""
        e = self.editor
        try:
            found = directions.load_file(path, e.n_latent, e.style_dim)
        except (ValueError, KeyError) as err:
            raise UserError(str(err).replace(str(path), name or Path(path).name)) from None
        d = dataclasses.replace(found[0], name=CUSTOM)
        session.custom = d
        return d.label.replace(found[0].name, name or found[0].name, 1)

    # -- edits ----------------------------------------------------------------------------------
    def strengths(self, session: Session, offsets: Sequence[float]) -> dict:
        """{direction: official strength} of the sliders not at 0 (offsets: one per name, then custom)."""
        if session.latent is None:
            raise UserError("load a photo first (upload, pick or draw a random sample)")
        dirs = [self.editor.directions[n] for n in self.names] + [session.custom]
        return {
            d: directions.neutral(d, session.latent) + float(v) for d, v in zip(dirs, offsets) if d is not None and v
        }

    def edited(self, session: Session, offsets: Sequence[float]) -> np.ndarray:
        """The tab's latent with every slider applied (the inversion itself when all are at 0)."""
        edits = self.strengths(session, offsets)
        return self.editor.edit(session.latent, edits) if edits else session.latent

    def render_preview(self, session: Session, offsets: Sequence[float]) -> tuple[bytes, float]:
        """The live preview of the sliders: (encoded bytes, server-side seconds: edit, render, encode)."""
        t0 = time.perf_counter()
        data = preview.encode(self.editor.preview(self.edited(session, offsets)))
        return data, time.perf_counter() - t0

    def export(self, session: Session, offsets: Sequence[float]) -> list[str]:
        """Write the edited image (full-size PNG) and its latent ((1, n, D) float32, what `e4e-jax edit
        --latents` and the /edit endpoint read) into the tab's folder; their paths."""
        w = self.edited(session, offsets)
        out = self.workdir / session.id
        out.mkdir(parents=True, exist_ok=True)
        png, npy = out / f"{session.stem}{EDITED_SUFFIX}", out / f"{session.stem}{LATENT_SUFFIX}"
        save_png(png, self.editor.render(w))
        fileio.save_npy(npy, w[None].astype(np.float32))
        return [str(png), str(npy)]

    def strip(self, session: Session, name: str, offsets: Sequence[float]) -> np.ndarray:
        """A strength strip of direction `name` (uint8 (h, STRIP_LEN * w, 3)) around the current edit."""
        if name == CUSTOM or name not in self.editor.directions:
            raise UserError(f"choose one of the directions for the strip ({', '.join(self.names)})")
        return self.editor.strip(self.edited(session, offsets), name)[0]

    # -- the API endpoints ----------------------------------------------------------------------
    def api_invert(self, path: str | Path) -> tuple[np.ndarray, str]:
        """/invert: a photo -> (its reconstruction uint8, the path of its latent .npy (1, n, D))."""
        session = Session()
        loaded = self.load_path(session, path)
        return loaded.inversion, self.export(session, [])[1]

    def api_edit(self, latent_path: str | Path, name: str, strength: float) -> np.ndarray:
        """/edit: (a latent .npy of one code, a direction name, an official strength) -> full-size image."""
        e = self.editor
        latents = generate.check_latents(fileio.load_npy(latent_path), e.model.gen_config, Path(latent_path).name)
        if latents.shape[0] != 1:
            raise UserError(f"{Path(latent_path).name} holds {latents.shape[0]} latents; /edit takes one")
        return e.render(e.edit(latents[0], {name: float(strength)}))
