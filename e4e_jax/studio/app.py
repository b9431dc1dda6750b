"""The studio page (Gradio Blocks) over a `session.Studio`: photo in, one slider per direction, live preview.

Events: a slider's `.input` (every move while dragging) re-renders the preview with `trigger_mode=
"always_last"` (a move that arrives while a render runs is kept, the ones between are dropped, so the
image follows the hand without a backlog) and no progress overlay; its `.release` writes the downloads
(full-size PNG and latent). Renders of every tab share one queue slot (`concurrency_id`), since they share
one device. Each tab has its own `gr.State` (a `session.Session`). Bad input (a file that is not an image,
a truncated one, a huge one, a photo without a face, a direction that does not fit) is a warning on the
page and in the status line; the page keeps its previous photo and keeps working.

Named endpoints for `gradio_client`: /invert (photo -> reconstruction, latent .npy) and /edit (latent
.npy, direction name, official strength -> image); README, "Studio".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e4e_jax.errors import UserError
from e4e_jax.inference import directions
from e4e_jax.studio import preview
from e4e_jax.studio.session import CUSTOM, Session, Studio

SLIDER_STEP = 0.1
RENDER_QUEUE = "render"  # the concurrency id of every event that runs the generator
KIND_TITLES = {directions.INTERFACEGAN: "InterFaceGAN", directions.GANSPACE: "GANSpace", directions.SEFA: "SeFa"}
WARN = "⚠ "  # the status line's prefix for a message about bad input


def _header(studio: Studio) -> str:
    e = studio.editor
    cfg = e.model.gen_config
    enc = type(e.model.encoder).__name__
    align = "faces aligned first (FFHQ crop)" if e.align else "no alignment"
    return (
        f"## e4e-jax studio\n`{e.path}`: {e.kind} bundle, {enc}, generator {cfg.size}², "
        f"domain {e.model.domain or 'unknown'}, {align}. Sliders are offsets from the photo's own position "
        f"along each direction; compiled in {e.timings.compile_s:.1f} s."
    )


def build(studio: Studio):
    """The gr.Blocks of the page (not launched): the photo row, the sliders, the tools, their events, the API."""
    import gradio as gr

    e = studio.editor
    with gr.Blocks(title="e4e-jax studio") as page:
        c = {"state": gr.State(None)}
        gr.Markdown(_header(studio))
        if e.notes:
            gr.Markdown("\n".join(f"- {n}" for n in e.notes), elem_id="e4e-notes")
        c.update(_photo_row(studio, gr))
        c["status"] = gr.Markdown("Load a photo: upload one, pick one or draw a random sample.", elem_id="e4e-status")
        c.update(_sliders(studio, gr))
        c.update(_tools(studio, gr))
        handlers = _Handlers(studio, gr)
        _connect(c, handlers)
        _api(handlers, gr)
    return page


def _photo_row(studio: Studio, gr) -> dict[str, Any]:
    """The inputs (upload, pick, random sample) beside the source, the inversion and the live edit."""
    with gr.Row():
        with gr.Column(scale=1):
            photo = gr.File(label="Photo: upload or drop", type="filepath", elem_id="e4e-photo")
            pick = gr.Dropdown(
                choices=studio.pickable(),
                value=None,
                label=f"or pick one from {studio.images_dir}",
                visible=studio.images_dir is not None,
                elem_id="e4e-pick",
            )
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**32 - 1, label="seed")
                sample = gr.Button("Random sample", elem_id="e4e-sample")
        source = gr.Image(label="source", interactive=False, format="png", elem_id="e4e-source")
        inverted = gr.Image(label="inversion", interactive=False, format="png", elem_id="e4e-inversion")
        with gr.Column():
            gr.Markdown("edited (live)")
            edited = gr.HTML(elem_id="e4e-edited-box")
    return dict(photo=photo, pick=pick, seed=seed, sample=sample, source=source, inverted=inverted, edited=edited)


def _sliders(studio: Studio, gr) -> dict[str, Any]:
    """One slider per direction, grouped by kind, then the custom direction's file box and slider.

    "sliders" lists them in `studio.names` order with the custom slider last: the order of every handler's
    `*offsets`.
    """
    e = studio.editor
    by_name = {}
    for kind, title in KIND_TITLES.items():
        mine = [n for n in studio.names if e.directions[n].kind == kind]
        if mine:
            with gr.Accordion(title, open=True):
                for n in mine:
                    d = e.directions[n]
                    by_name[n] = gr.Slider(
                        -d.span, d.span, value=0, step=SLIDER_STEP, label=d.label, elem_id=f"e4e-slider-{n}"
                    )
    with gr.Accordion("Your own direction", open=False):
        custom_file = gr.File(label="direction file (.pt / .npy)", type="filepath", elem_id="e4e-direction")
        custom = gr.Slider(-5, 5, value=0, step=SLIDER_STEP, label=CUSTOM, visible=False, elem_id="e4e-slider-custom")
    return dict(sliders=[by_name[n] for n in studio.names] + [custom], custom=custom, custom_file=custom_file)


def _tools(studio: Studio, gr) -> dict[str, Any]:
    """Reset, the downloads box and the strength strip."""
    names = studio.names
    with gr.Row():
        reset = gr.Button("Reset", elem_id="e4e-reset")
        downloads = gr.File(label="Downloads: edited PNG, latent", file_count="multiple", elem_id="e4e-downloads")
    with gr.Row():
        strip_name = gr.Dropdown(choices=names, value=names[0] if names else None, label="strength strip of")
        strip_go = gr.Button("Strength strip", elem_id="e4e-strip-go")
    strip = gr.Image(label="strength strip", interactive=False, format="png", elem_id="e4e-strip")
    return dict(reset=reset, downloads=downloads, strip_name=strip_name, strip_go=strip_go, strip=strip)


def _connect(c: dict[str, Any], handlers: _Handlers) -> None:
    """The page's events, every one in the render queue and private to the page (not in the API)."""
    state, sliders = c["state"], c["sliders"]
    loaded = [state, c["source"], c["inverted"], c["edited"], c["status"], c["downloads"], *sliders]
    ev = dict(concurrency_id=RENDER_QUEUE, api_visibility="private")
    # The file boxes are emptied after each upload, ready for the next photo or direction.
    c["photo"].upload(handlers.photo, [state, c["photo"]], loaded, **ev).then(lambda: None, None, c["photo"], **ev)
    c["pick"].input(handlers.pick, [state, c["pick"]], loaded, **ev)
    c["sample"].click(handlers.sample, [state, c["seed"]], loaded, **ev)
    for s in sliders:
        s.input(
            handlers.slide,
            [state, *sliders],
            [c["edited"]],
            trigger_mode="always_last",
            show_progress="hidden",
            **ev,
        )
        s.release(handlers.export, [state, *sliders], [c["downloads"], c["status"]], show_progress="hidden", **ev)
    c["reset"].click(handlers.reset, [state], [c["edited"], c["downloads"], *sliders], **ev)
    c["custom_file"].upload(handlers.custom, [state, c["custom_file"]], [state, c["custom"], c["status"]], **ev).then(
        lambda: None, None, c["custom_file"], **ev
    )
    c["strip_go"].click(handlers.strip, [state, c["strip_name"], *sliders], [c["strip"], c["status"]], **ev)


def _api(handlers: _Handlers, gr) -> None:
    """The API's own hidden components and the named endpoints /invert and /edit (gradio_client)."""
    with gr.Row(visible=False):
        api_photo = gr.Image(type="filepath", label="photo")
        api_recon = gr.Image(format="png", label="reconstruction")
        api_latent = gr.File(label="latent (.npy)")
        api_name = gr.Textbox(label="direction")
        api_strength = gr.Number(label="strength")
        api_edited = gr.Image(format="png", label="edited")
        api_invert_go, api_edit_go = gr.Button("invert"), gr.Button("edit")
    api_invert_go.click(
        handlers.api_invert, [api_photo], [api_recon, api_latent], api_name="invert", concurrency_id=RENDER_QUEUE
    )
    api_edit_go.click(
        handlers.api_edit,
        [api_latent, api_name, api_strength],
        [api_edited],
        api_name="edit",
        concurrency_id=RENDER_QUEUE,
    )


class _Handlers:
    """The event functions: `studio`'s operations, with bad input turned into a warning on the page."""

    def __init__(self, studio: Studio, gr):
        self.studio, self.gr = studio, gr
        self.n_sliders = len(studio.names) + 1

    @staticmethod
    def _refuse(message: str):
        def load(session):
            raise UserError(message)

        return load

    def _warn(self, err: UserError) -> str:
        self.gr.Warning(str(err))
        return WARN + str(err)

    def _loaded(self, session: Session, load) -> tuple:
        gr = self.gr
        try:
            got = load(session)
        except UserError as err:  # the tab keeps what it showed
            return (session, gr.skip(), gr.skip(), gr.skip(), self._warn(err), gr.skip(), *[gr.skip()] * self.n_sliders)
        html = preview.html(got.preview, got.inversion.shape[:2], "")
        files = self.studio.export(session, [])
        shown = [preview.enlarge(got.source), preview.enlarge(got.inversion)]
        return (session, *shown, html, got.status, files, *[0.0] * self.n_sliders)

    def photo(self, session, path):
        session = session or Session()
        if not path:
            return self._loaded(session, self._refuse("no file was uploaded"))
        return self._loaded(session, lambda s: self.studio.load_path(s, path))

    def pick(self, session, name):
        session = session or Session()
        if not name:
            return self._loaded(session, self._refuse("pick a photo"))
        return self._loaded(session, lambda s: self.studio.load_path(s, Path(self.studio.images_dir) / name))

    def sample(self, session, seed):
        session = session or Session()
        return self._loaded(session, lambda s: self.studio.load_sample(s, int(seed or 0)))

    def slide(self, session, *offsets):
        if session is None or session.latent is None:
            return self.gr.skip()
        try:
            data, seconds = self.studio.render_preview(session, offsets)
        except UserError as err:
            self._warn(err)
            return self.gr.skip()
        hw = self.studio.editor.preview_hw
        return preview.html(data, hw, f"server-side render {1000 * seconds:.1f} ms (edit, render, JPEG)")

    def export(self, session, *offsets) -> tuple[Any, Any]:
        if session is None or session.latent is None:
            return self.gr.skip(), self.gr.skip()
        try:
            return self.studio.export(session, offsets), self.gr.skip()
        except UserError as err:
            return self.gr.skip(), self._warn(err)

    def reset(self, session):
        if session is None or session.latent is None:
            return (self.gr.skip(), self.gr.skip(), *[0.0] * self.n_sliders)
        zeros = [0.0] * self.n_sliders
        data, _ = self.studio.render_preview(session, zeros)
        html = preview.html(data, self.studio.editor.preview_hw, "reset: the inversion")
        return (html, self.studio.export(session, zeros), *zeros)

    def custom(self, session, path):
        gr = self.gr
        session = session or Session()
        try:
            label = self.studio.set_custom(session, path, Path(path).name if path else None)
        except UserError as err:
            return session, gr.skip(), self._warn(err)
        span = session.custom.span
        slider = gr.Slider(minimum=-span, maximum=span, value=0, label=label, visible=True)
        return session, slider, f"added your direction: {label}"

    def strip(self, session, name, *offsets):
        if session is None or session.latent is None:
            return self.gr.skip(), self._warn(UserError("load a photo first"))
        try:
            strip = self.studio.strip(session, name, offsets)
            return preview.enlarge(strip, preview.STRIP_DISPLAY_PX), self.gr.skip()
        except UserError as err:
            return self.gr.skip(), self._warn(err)

    def api_invert(self, path):
        try:
            return self.studio.api_invert(path)
        except UserError as err:
            raise self.gr.Error(str(err)) from None

    def api_edit(self, latent_path, name, strength):
        try:
            return self.studio.api_edit(latent_path, name, strength)
        except UserError as err:
            raise self.gr.Error(str(err)) from None
