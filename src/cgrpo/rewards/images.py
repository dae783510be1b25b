"""Image helpers shared by the real-photo reward backends.

- :func:`load_image` / :func:`load_images`: read image files into float tensors in [0, 1]
  (the project's one image loader, also behind :mod:`cgrpo.datasets`); an unreadable file
  fails with its name and the fix. :func:`square_crop` gives its ``crop=True`` result from an
  already loaded whole image; :func:`to_pil` / :func:`from_pil` convert either way.
- :func:`check_batch`: validate the ``(images, prompts, references)`` triple of a reward call.
- :func:`resize_center_crop` / :func:`normalize`: the resize-shorter-side, centre-crop and
  mean/std steps of the usual image processors, on batched tensors (CPU or GPU), so a batch
  never round-trips through PIL.
- :class:`EmbeddingCache`: a bounded LRU cache of per-image (or per-text) embeddings keyed by
  content, used to encode each unique reference image once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "EmbeddingCache",
    "check_batch",
    "check_image",
    "check_images",
    "from_pil",
    "image_key",
    "load_image",
    "load_images",
    "normalize",
    "resize_center_crop",
    "square_crop",
    "to_pil",
    "to_uint8",
    "resolve_device",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------- files


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
        with Image.open(p) as im:
            if size is not None and not crop:
                im.draft("RGB", (size, size))
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
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
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ValueError(
            f"cannot read image file {str(p)!r}: {exc}; the file is truncated or not an image "
            "PIL can decode: replace it with a valid PNG or JPEG (download or export it again)"
        ) from exc
    return out


def from_pil(im: PILImage) -> torch.Tensor:
    """A PIL image as a float (3, H, W) tensor in [0, 1] (RGB)."""
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
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
    """Why the file at ``path`` is not a readable image, or None when it is: a fast check
    (PIL parses the header and ``verify()`` walks the file's structure without decoding
    the pixels; for PNG that includes every chunk's CRC)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        return "file not found"
    try:
        with Image.open(p) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return f"not a readable image ({exc})"
    return None


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


# ----------------------------------------------------------------------------- validation


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


def check_batch(
    images: object, prompts: object, references: object | None, need_references: bool = True
) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """Validate a reward call; returns float32 images, the prompt list and the references.

    ``references`` may be ``None`` only when ``need_references`` is false (CLIP-T, HPS-v3).
    """
    imgs = check_images(images, "images")
    b = imgs.shape[0]
    refs: torch.Tensor | None = None
    if references is not None or need_references:
        refs = check_images(references, "references")
        if refs.shape[0] != b:
            raise ValueError(
                f"references must have shape ({b}, 3, H', W') to match images, "
                f"got {tuple(refs.shape)}"
            )
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of {b} strings, got {type(prompts)!r}")
    if len(prompts) != b:
        raise ValueError(
            f"prompts must be a list of {b} strings (one per image), got {len(prompts)}"
        )
    return imgs, list(prompts), refs


# ----------------------------------------------------------------------------- transforms


def resize_center_crop(
    x: torch.Tensor, resize: int, crop: int, mode: str = "bicubic"
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


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of (N, 3, H, W)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


# ----------------------------------------------------------------------------- cache


def image_key(x: torch.Tensor) -> str:
    """Content key of one image tensor: shape plus a BLAKE2b digest of its float32 bytes."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return f"{tuple(arr.shape)}:{hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()}"


class EmbeddingCache:
    """Bounded LRU cache ``key -> embedding`` (embeddings kept on the encoder's device).

    :meth:`get_many` encodes only the keys it has not seen, in one batched call, and returns
    the embeddings of all keys in order; ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, max_items: int = 1024) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every embedding."""
        self._store.clear()

    def get_many(
        self,
        keys: Sequence[Hashable],
        encode: Callable[[list[int]], torch.Tensor],
    ) -> torch.Tensor:
        """Embeddings (len(keys), D) for ``keys``.

        ``encode(positions)`` must return the embeddings (len(positions), D) of the items at
        those positions of ``keys``; it is called once, with the first position of each unique
        key not in the cache, or not at all when every key is cached.
        """
        first: dict[Hashable, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [i for k, i in first.items() if k not in self._store]
        self.hits += len(first) - len(todo)
        self.misses += len(todo)
        fresh: dict[Hashable, torch.Tensor] = {}
        if todo:
            emb = encode(todo)
            for j, i in enumerate(todo):
                fresh[keys[i]] = emb[j]
        for k in first:
            if k in self._store:
                self._store.move_to_end(k)
        out = torch.stack([fresh[k] if k in fresh else self._store[k] for k in keys])
        for k, v in fresh.items():
            self._store[k] = v
            if len(self._store) > self.max_items:
                self._store.popitem(last=False)
        return out
