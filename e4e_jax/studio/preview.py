"""The live preview's bytes: JPEG at the Editor's preview size (`editor.PREVIEW_SIZE`), sent inline.

JPEG because it is the cheapest of the browser's formats to encode (PIL's libjpeg-turbo: a few ms for
512², where PNG takes tens and WebP about ten); the preview only has to follow the slider, the download
is the lossless full-size PNG. Sent as a data URL inside the page's HTML, so a slider move is one message
and no file is written or fetched.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

FORMAT, QUALITY = "JPEG", 90
MIME = "image/jpeg"
ELEMENT_ID = "e4e-edited"  # the preview <img>'s id (the browser tests read it)
DISPLAY_PX = 384  # the preview's displayed width (CSS px): small generators are enlarged, pixelated
STRIP_DISPLAY_PX = 1024  # a strength strip's width that small cells are enlarged to


def encode(image: np.ndarray) -> bytes:
    """uint8 (h, w, 3) -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buf, format=FORMAT, quality=QUALITY)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 (h, w, 3) (tests, benchmarks)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def enlarge(image: np.ndarray, px: int = DISPLAY_PX) -> np.ndarray:
    """A small image (a toy generator's 16² or 32²) repeated to about `px` on its longer side for display:
    whole pixels, no smoothing. Images that large already are returned as they are."""
    k = px // max(image.shape[:2])
    return image if k <= 1 else np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def data_url(data: bytes) -> str:
    return f"data:{MIME};base64,{base64.b64encode(data).decode('ascii')}"


def html(data: bytes, hw: tuple[int, int], caption: str = "") -> str:
    """The preview element: the image (h, w = `hw`) inline at DISPLAY_PX wide, and a caption (e.g. the
    server-side render time). Images smaller than that are enlarged without smoothing (toy generators)."""
    pixelated = ";image-rendering:pixelated" if max(hw) < DISPLAY_PX else ""
    img = (
        f'<img id="{ELEMENT_ID}" src="{data_url(data)}" alt="edited image" '
        f'style="width:{DISPLAY_PX}px;max-width:100%{pixelated}">'
    )
    return f'<div>{img}<div id="{ELEMENT_ID}-caption">{caption}</div></div>'
