"""Pixels without torch: the paper's 256x256 geometry (§2) and any PIL image as 8-bit RGB.

Shared by the training loader (data.load_image) and the one-time down-sampling (prepare.py), so a prepared
image holds what training would have computed from the original, up to the JPEG re-encoding. PIL and
numpy only.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
RESIZE = 256  # shorter side, then the centre 256x256 (paper §2)
# Past this aspect ratio the full-width resize would be huge (a 10000x1 strip becomes 2.56 M x 256 pixels),
# so only the centre is resized; within +-1 grey level of the plain path, which every real photo takes.
MAX_PLAIN_ASPECT = 16
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": 16-bit PNG/TIFF as 32-bit integers
WHITE = (255, 255, 255, 255)


def resize_center(im: Image.Image) -> Image.Image:
    """Shorter side to 256 (bilinear; PIL widens the filter when shrinking), then the centre 256x256.

    A 256x256 image comes back untouched, so an already prepared file is used exactly as decoded.
    """
    w, h = im.size
    if (w, h) == (RESIZE, RESIZE):
        return im
    scale = RESIZE / min(w, h)
    size = (max(RESIZE, round(w * scale)), max(RESIZE, round(h * scale)))
    left, top = (size[0] - RESIZE) // 2, (size[1] - RESIZE) // 2
    if max(size) > MAX_PLAIN_ASPECT * RESIZE:
        sx, sy = w / size[0], h / size[1]  # source pixels per resized pixel
        box = (left * sx, top * sy, (left + RESIZE) * sx, (top + RESIZE) * sy)
        return im.resize((RESIZE, RESIZE), Image.BILINEAR, box=box)
    im = im.resize(size, Image.BILINEAR)
    return im.crop((left, top, left + RESIZE, top + RESIZE))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB with the colours it is meant to show.

    16-bit grey is scaled to 8 bits (PIL's own convert clips it: everything above 255 turns white);
    transparent pixels are shown over white, as a browser page shows them (convert alone would expose
    whatever colour the transparent pixels happen to store); CMYK goes through PIL's conversion, which
    undoes Adobe's inverted CMYK JPEGs.
    """
    if im.mode == "RGB":
        return im
    if im.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(im).astype(np.float32) / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("La", "RGBa"):  # premultiplied alpha: undo it first
        im = im.convert(im.mode.upper())
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, WHITE), im).convert("RGB")
    return im.convert("RGB")


def to_grey(im: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit grey: the grey of what `to_rgb` shows (16 bits scaled, alpha over white)."""
    return im if im.mode == "L" else to_rgb(im).convert("L")


def why_unreadable(error: BaseException) -> str:
    """One line saying why PIL could not read an image (it raises many types for broken files)."""
    if isinstance(error, UnidentifiedImageError):
        text = "not an image PIL can read"
    elif isinstance(error, Image.DecompressionBombError):
        text = f"decompression bomb refused: {error} (PIL's limit on pixels; shrink the image to read it)"
    else:
        text = f"{type(error).__name__}: {str(error).strip() or 'no detail'}"
    return " ".join(text.split())  # one line, no tabs
