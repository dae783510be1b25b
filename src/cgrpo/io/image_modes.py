"""Any PIL image mode as 8-bit RGB, read the way the file means it.

PIL's own ``convert("RGB")`` clips the 16- and 32-bit grey modes at 255 (a 16-bit PNG of
mean 0.5 reads 99 % white) and drops alpha, so whatever colour a transparent pixel happens
to store shows. :func:`to_rgb` converts:

- 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``: 16-bit PNG and TIFF) and ``I``
  (32-bit integer grey, what older PIL gave 16-bit PNGs): 0..65535 scaled to 0..255,
  rounded (values outside 0..65535 clipped);
- ``F`` (float grey): 0..1 when no value exceeds 1 (the float convention; read on PIL's
  0..255 scale such an image would be black), else PIL's 0..255 scale; rounded, clipped;
- alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, and ``P`` / ``L`` / ``RGB`` with a
  transparent colour): composited on white. Subject references (DreamBench, SynCD) are
  opaque photos, where this changes nothing; a cut-out subject with transparency is shown on
  a plain white ground, the usual product-shot background, rather than on the arbitrary
  (often black) colour stored under its transparent pixels;
- every other mode (``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``HSV``,
  ``LAB``): PIL's conversion (for ``LAB`` the same sRGB values as littlecms gives; ``CMYK``
  is converted by formula: an embedded ICC print profile is not applied).

16-bit RGB(A) and grey-with-alpha PNGs reach us as 8-bit ``RGB`` / ``RGBA`` / ``LA``: PIL
keeps the high byte of each sample, at most 1/255 below the rounded value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["to_rgb"]

#: the numpy layout of the integer grey modes' pixel bytes (``Image.tobytes()``)
_INT_GREY = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4"}


class ImageModeError(ValueError):
    """An image mode that has no conversion to RGB."""


def to_rgb(im: PILImage) -> PILImage:
    """``im`` as an 8-bit ``RGB`` image (see the module docstring for each mode's rule).

    Raises :class:`ImageModeError` (a ``ValueError``) for a mode PIL cannot convert."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _INT_GREY:
        grey = _pixels(im, _INT_GREY[mode]).astype(np.float64)
        return _grey_to_rgb(grey * (255.0 / 65535.0))
    if mode == "F":
        grey = _pixels(im, "=f4").astype(np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if grey.size and float(grey.max()) <= 1.0 else 1.0
        return _grey_to_rgb(grey * scale)
    try:
        if im.has_transparency_data:
            return _on_white(im.convert("RGBA"))
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageModeError(f"image mode {mode!r} has no conversion to RGB ({exc})") from None


def _pixels(im: PILImage, dtype: str) -> np.ndarray:
    """The (H, W) pixel values of a one-band image whose bytes are laid out as ``dtype``."""
    w, h = im.size
    return np.frombuffer(im.tobytes(), dtype=np.dtype(dtype)).reshape(h, w)


def _grey_to_rgb(grey: np.ndarray) -> PILImage:
    """(H, W) grey values on the 0..255 scale -> ``RGB``, rounded and clipped."""
    from PIL import Image

    l8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(l8).convert("RGB")


def _on_white(rgba: PILImage) -> PILImage:
    """An ``RGBA`` image composited on white: ``rgb * a + 255 * (1 - a)``, rounded."""
    from PIL import Image

    arr = np.asarray(rgba, dtype=np.float64)
    alpha = arr[..., 3:] / 255.0
    rgb = arr[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
