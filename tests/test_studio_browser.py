"""`e4e-jax studio` in a real browser (Debian's headless Chromium driven by Playwright) and through
gradio_client: the page is served by a subprocess on 127.0.0.1 on the tiny face-domain bundle.

Every wait is on a condition (the page answering, an element's text or attribute), bounded by a timeout.
The library side of each comparison is an `Editor` of the same bundle in this process (its compiled
functions come from the same persistent cache) and the `invert` / `edit` commands."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4e_jax.cli import main as cli_main
from tests import studio_server
from tests.assets import E4E_ASSETS, needs_assets

pytestmark = needs_assets
WAIT_MS = 300_000  # per condition: an inversion on a loaded CI machine takes seconds, its first call longer
PHOTO = E4E_ASSETS / "images" / "input_img.jpg"
SLIDER = "sefa_0"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    studio_server.require("gradio", "gradio_client", "playwright", browser=True)
    root = tmp_path_factory.mktemp("studio")
    model, dirs = studio_server.make_model(root)
    server = studio_server.Server(["--model", str(model), "--directions", str(dirs)], root / "server")
    try:
        server.wait_ready()
        yield {"url": server.url, "model": model, "dirs": dirs, "root": root}
    finally:
        assert server.stop() == 0, server.log.read_text()[-4000:]


@pytest.fixture(scope="module")
def editor(served):
    from e4e_jax import compile_cache
    from e4e_jax.editor import Editor

    compile_cache.enable()
    return Editor(served["model"], directions_dir=served["dirs"])


@pytest.fixture(scope="module")
def browser(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=studio_server.CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1200}, accept_downloads=True)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_selector("#e4e-photo input[type=file]", state="attached")
    return page


def _upload(page, path: Path, expect_text: str):
    from playwright.sync_api import expect

    page.locator("#e4e-photo input[type=file]").set_input_files(str(path))
    expect(page.locator("#e4e-status")).to_contain_text(expect_text, timeout=WAIT_MS)


def _preview(page) -> bytes:
    src = page.locator("#e4e-edited").get_attribute("src")
    return base64.b64decode(src.split(",", 1)[1])


def _drag(page, name: str, fraction: float) -> float:
    """Drag slider `name` from its middle by `fraction` of its width, as a hand does (many input events,
    one release); returns the value it shows."""
    box = page.locator(f"#e4e-slider-{name} input[type=range]").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x + i * fraction * box["width"] / 10, y)
    page.mouse.up()
    return float(page.locator(f"#e4e-slider-{name} input[type=number]").input_value())


def _download(page, index: int, dest: Path) -> Path:
    with page.expect_download(timeout=WAIT_MS) as d:
        page.locator("#e4e-downloads a").nth(index).click()
    d.value.save_as(dest)
    return dest


def _wait_downloads_change(page, old_href: str):
    from playwright.sync_api import expect

    expect(page.locator("#e4e-downloads a").first).not_to_have_attribute("href", old_href, timeout=WAIT_MS)


def test_photo_slider_downloads_match_the_library_and_the_commands(served, editor, browser, tmp_path):
    from playwright.sync_api import expect

    page = _open(browser, served["url"])
    _upload(page, PHOTO, "inverted")
    assert "aligned face input_img" in page.locator("#e4e-status").inner_text()
    first = _preview(page)
    # The latent downloaded before any slider moved is `e4e-jax invert --align --batch-size 1`'s.
    latent = np.load(_download(page, 1, tmp_path / "inverted.npy"))
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTO, tmp_path / "photos")
    argv = ["invert", "--model", str(served["model"]), "--images", str(tmp_path / "photos")]
    assert cli_main([*argv, "--output", str(tmp_path / "inv"), "--align", "--batch-size", "1"]) == 0
    np.testing.assert_array_equal(latent, np.load(tmp_path / "inv" / "latents.npy"))
    # Move a slider: the preview changes while it moves, and is the library's edit of that latent.
    href = page.locator("#e4e-downloads a").first.get_attribute("href")
    value = _drag(page, SLIDER, 0.3)
    assert value > 0
    expect(page.locator("#e4e-edited")).not_to_have_attribute(
        "src", "data:image/jpeg;base64," + base64.b64encode(first).decode()
    )
    expect(page.locator("#e4e-edited-caption")).to_contain_text("server-side render")
    from e4e_jax.studio import preview

    wanted = editor.edit(latent[0], {SLIDER: value})
    _wait_downloads_change(page, href)  # the release wrote the downloads of the edit
    assert _preview(page) == preview.encode(editor.preview(wanted))
    edited_png = _download(page, 0, tmp_path / "edited.png")
    edited_npy = np.load(_download(page, 1, tmp_path / "edited.npy"))
    np.testing.assert_array_equal(edited_npy[0], wanted)
    np.testing.assert_array_equal(np.asarray(Image.open(edited_png)), editor.render(wanted))
    # ... which is `e4e-jax edit` of the inverted latent at that strength, latent and image.
    out = tmp_path / "edit"
    argv = ["edit", "--model", str(served["model"]), "--latents", str(tmp_path / "inverted.npy"), "--output", str(out)]
    assert cli_main([*argv, "--sefa", "0", "--layers", "all", "--strengths", str(value)]) == 0
    np.testing.assert_array_equal(np.load(out / "latents.npy")[0], edited_npy)
    (edit_png,) = (out / "images").glob("*.png")
    np.testing.assert_array_equal(np.asarray(Image.open(edit_png)), np.asarray(Image.open(edited_png)))
    # A strength strip, then Reset brings back the inversion.
    page.locator("#e4e-strip-go").click()
    expect(page.locator("#e4e-strip img")).to_be_visible()
    page.locator("#e4e-reset").click()
    expect(page.locator(f"#e4e-slider-{SLIDER} input[type=number]")).to_have_value("0")
    expect(page.locator("#e4e-edited")).to_have_attribute(
        "src", "data:image/jpeg;base64," + base64.b64encode(first).decode()
    )
    shot = Path(os.environ.get("E4E_STUDIO_SCREENSHOT") or tmp_path / "studio.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    page.close()


def test_tabs_keep_their_own_photo_and_edits(served, browser):
    from playwright.sync_api import expect

    a, b = _open(browser, served["url"]), _open(browser, served["url"])
    _upload(a, PHOTO, "inverted")
    b.locator("#e4e-sample").click()
    expect(b.locator("#e4e-status")).to_contain_text("sample0")
    a_preview, b_preview = _preview(a), _preview(b)
    assert a_preview != b_preview
    _drag(b, SLIDER, -0.3)
    expect(b.locator("#e4e-edited")).not_to_have_attribute(
        "src", "data:image/jpeg;base64," + base64.b64encode(b_preview).decode()
    )
    assert _preview(a) == a_preview and "input_img" in a.locator("#e4e-status").inner_text()
    assert a.locator(f"#e4e-slider-{SLIDER} input[type=number]").input_value() == "0"
    a.close()
    b.close()


def test_bad_input_is_a_message_and_the_page_keeps_working(served, browser, tmp_path):
    from playwright.sync_api import expect

    page = _open(browser, served["url"])
    for case, (path, words) in studio_server.bad_files(tmp_path).items():
        page.locator("#e4e-photo input[type=file]").set_input_files(str(path))
        expect(page.locator("#e4e-status"), case).to_contain_text(words)
        assert page.locator("#e4e-status").inner_text().startswith("⚠"), case
        expect(page.locator(".toast-body").filter(has_text=words).first, case).to_be_visible()
    # A direction file of the wrong shape for "your own direction".
    np.save(tmp_path / "wide.npy", np.ones((1, 18, 512), np.float32))
    page.get_by_text("Your own direction").click()
    page.locator("#e4e-direction input[type=file]").set_input_files(str(tmp_path / "wide.npy"))
    expect(page.locator("#e4e-status")).to_contain_text("wide.npy: direction of shape (18, 512) does not fit")
    # The page still works: a photo inverts, a slider edits, a fitting direction becomes a slider.
    _upload(page, PHOTO, "inverted")
    before = _preview(page)
    _drag(page, SLIDER, 0.2)
    expect(page.locator("#e4e-edited")).not_to_have_attribute(
        "src", "data:image/jpeg;base64," + base64.b64encode(before).decode()
    )
    np.save(tmp_path / "fits.npy", np.ones((1, 512), np.float32))
    page.locator("#e4e-direction input[type=file]").set_input_files(str(tmp_path / "fits.npy"))
    expect(page.locator("#e4e-status")).to_contain_text("added your direction")
    expect(page.locator("#e4e-slider-custom")).to_be_visible()
    page.close()


def test_gradio_client_endpoints(served, editor, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(served["url"], verbose=False, download_files=str(tmp_path))
    recon, latent = client.predict(handle_file(str(PHOTO)), api_name="/invert")
    w = np.load(latent)
    prepared = editor.prepare(PHOTO)
    inv = editor.invert(prepared.pixels)
    np.testing.assert_array_equal(w[0], inv.latent)
    np.testing.assert_array_equal(np.asarray(Image.open(recon)), inv.image)
    edited = client.predict(handle_file(latent), "age", 2.5, api_name="/edit")
    np.testing.assert_array_equal(np.asarray(Image.open(edited)), editor.render(editor.edit(w[0], {"age": 2.5})))
    with pytest.raises(Exception, match="no direction named 'nope'"):
        client.predict(handle_file(latent), "nope", 1.0, api_name="/edit")
