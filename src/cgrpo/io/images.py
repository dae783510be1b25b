"""Image files and image tensors: the project's one image loader and its conversions.

- :func:`load_image` / :func:`load_images`: read image files into float tensors in [0, 1]
  (RGB, EXIF-rotated; every PIL mode converted as the file means it, see
  :mod:`cgrpo.io.image_modes`: 16-bit grey scaled, alpha composited on white); an
  unreadable file, or one over :data:`MAX_PIXELS`, fails with its name and the fix.
  :func:`square_crop` gives its ``crop=True`` result from an already loaded whole image;
  :func:`to_pil` / :func:`from_pil` / :func:`to_uint8` convert.
- :func:`check_image` decodes a file whole once and says why it is unreadable (datasets
  check every file before any compute); :func:`check_images` validates an image batch
  tensor.
- :func:`resize_center_crop`: the resize-shorter-side and centre-crop steps of the usual
  image processors, on batched tensors (CPU or GPU).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from cgrpo.io.image_modes import to_rgb

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "MAX_PIXELS",
    "check_image",
    "check_images",
    "from_pil",
    "load_image",
    "load_images",
    "resize_center_crop",
    "square_crop",
    "to_pil",
    "to_uint8",
]

#: the most pixels (width x height) an image file may have: 8192 x 8192, about 67 MP (a
#: 48 MP phone photo fits; ~200 MB decoded as 8-bit RGB, 800 MB as the float tensor). A
#: larger header is refused before any pixel is decoded (a "decompression bomb" is a small
#: file claiming a huge size); PIL's own limits (a warning past 89 MP, an error past 179 MP)
#: are higher, so this cap is the one in force.
MAX_PIXELS = 8192 * 8192

_FIX_LARGE = "downscale it (references are resized to the model's resolution anyway)"


def load_image(
    path: str | Path,
    size: int | None = None,
    *,
    crop: bool = False,
    exif_transpose: bool = True,
) -> torch.Tensor:
    """Read one image file as a float tensor (3, H, W) in [0, 1] (RGB), the one image loader.

    - ``size=None``: full resolution.
    - ``size`` without ``crop``: the longer side is downscaled to at most ``size`` pixels
      (aspect kept) with PIL's antialiased bicubic filter while decoding (JPEG draft mode
      makes this cheap); what the reward backends and the evaluation read.
    - ``crop=True``: the shorter side is resized to exactly ``size`` (PIL bicubic, up or
      down, from the full decode) and the centre ``size`` x ``size`` square is kept (3, S, S);
      what the datasets read as references.

    ``exif_transpose``: apply the file's EXIF orientation (default); ``False`` keeps the
    stored pixel order (the datasets' behaviour). Raises ``ValueError`` naming the file and
    the fix when it is missing or cannot be decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if crop and size is None:
        raise ValueError("load_image: crop=True needs a size")
    p = Path(path)
    try:
        with _open(p) as im:
            if size is not None and not crop:
                im.draft("RGB", (size, size))
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            if crop:
                assert size is not None
                im = _resize_shorter_and_crop(im, size)
            elif size is not None and max(im.size) > size:
                im.thumbnail((size, size), Image.Resampling.BICUBIC)
            out = from_pil(im)
    except FileNotFoundError:
        raise ValueError(
            f"image file not found: {str(p)!r}; check the path (and that the data folder "
            "is in place)"
        ) from None
    except _TooLarge as exc:
        raise ValueError(f"image file {str(p)!r} {exc}: {_FIX_LARGE}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ValueError(
            f"cannot read image file {str(p)!r}: {exc}; the file is truncated or not an image "
            "PIL can decode: replace it with a valid PNG or JPEG (download or export it again)"
        ) from exc
    return out


def from_pil(im: PILImage) -> torch.Tensor:
    """A PIL image as a float (3, H, W) tensor in [0, 1] (RGB; any mode, converted by
    :func:`cgrpo.io.image_modes.to_rgb`)."""
    arr = np.asarray(to_rgb(im), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).contiguous()


def to_pil(image: torch.Tensor) -> PILImage:
    """A (3, H, W) tensor in [0, 1] as an 8-bit RGB PIL image (exact for 8-bit values, such
    as what :func:`load_image` returns)."""
    from PIL import Image

    return Image.fromarray(to_uint8(image).permute(1, 2, 0).cpu().numpy())


def square_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """What ``load_image(path, size, crop=True)`` returns, from the whole image ``load_image``
    gave for the same file: shorter side to ``size`` (bicubic), centre square."""
    return from_pil(_resize_shorter_and_crop(to_pil(image), size))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``round(clamp(x, 0, 1) * 255)`` as uint8: the 8-bit image a PNG stores."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def check_image(path: str | Path) -> str | None:
    """Why the file at ``path`` is not a readable image, or None when it is.

    Decodes the whole file once, as :func:`load_image` will (``verify()`` first, which for
    PNG checks every chunk's CRC), so a truncated JPEG or PNG is found here, before any
    compute, and not when a training step first draws it; a header over :data:`MAX_PIXELS`
    is refused before decoding."""
    from PIL import UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        return "file not found"
    try:
        with _open(p) as im:
            im.verify()
        with _open(p) as im:
            im.load()
            to_rgb(im)
    except _TooLarge as exc:
        return f"{exc}: {_FIX_LARGE}"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return f"not a readable image ({exc})"
    return None


class _TooLarge(Exception):
    """An image whose header claims more than :data:`MAX_PIXELS` pixels (the message is a
    predicate: ``is W x H pixels, over ...``)."""


@contextmanager
def _open(path: Path) -> Iterator[PILImage]:
    """``Image.open(path)``, refused with :class:`_TooLarge` past :data:`MAX_PIXELS` (PIL's
    decompression-bomb warning and error included) before any pixel is decoded."""
    from PIL import Image

    cap = f"over the cap of {MAX_PIXELS} pixels (cgrpo.io.images.MAX_PIXELS)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            m = re.search(r"\((\d+) pixels\)", str(exc))
            raise _TooLarge(f"claims {m.group(1) if m else 'too many'} pixels, {cap}") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise _TooLarge(f"is {w} x {h} pixels ({w * h}), {cap}")
        yield im


def _resize_shorter_and_crop(im: PILImage, size: int) -> PILImage:
    """PIL image: shorter side resized to ``size`` (bicubic), centre ``size`` x ``size`` crop."""
    from PIL import Image

    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def load_images(paths: Sequence[str | Path], size: int) -> torch.Tensor:
    """Read image files into one batch (N, 3, size, size) in [0, 1].

    Each image is resized (shorter side to ``size``, bicubic, antialiased) and centre-cropped
    to a square, the usual input of the identity encoders.
    """
    out = [resize_center_crop(load_image(p, size=2 * size)[None], size, size) for p in paths]
    if not out:
        return torch.zeros(0, 3, size, size)
    return torch.cat(out).clamp_(0.0, 1.0)


def check_images(x: object, arg: str) -> torch.Tensor:
    """Validate a (B, 3, H, W) floating tensor without NaN; return it as float32 in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{arg} must be a torch.Tensor of shape (B, 3, H, W), got {type(x)!r}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{arg} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{arg} must be a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.shape[2] < 4 or x.shape[3] < 4:
        raise ValueError(f"{arg} must be at least 4x4 pixels, got shape {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"{arg} contains NaN pixels")
    return x.detach().float().clamp(0.0, 1.0)


def resize_center_crop(
    x: torch.Tensor, resize: int, crop: int, *, mode: str = "bicubic"
) -> torch.Tensor:
    """Resize the shorter side of (N, 3, H, W) to ``resize`` (antialiased), centre-crop ``crop``.

    The same geometry as the Hugging Face / torchvision ``Resize(resize)`` +
    ``CenterCrop(crop)`` pipelines; the result is not clamped (bicubic can overshoot [0, 1]
    by a little, as in those pipelines before normalisation).
    """
    h, w = x.shape[-2:]
    scale = resize / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return x[..., top : top + crop, left : left + crop]
