"""Subject segmentation for the "-Seg" identity metrics (DINO-Seg and friends).

A *segmenter* maps images (N, 3, H, W) in [0, 1] to soft subject masks (N, H, W) in [0, 1].
:func:`make_segmenter` turns a config value into one:

- ``None`` or ``"none"``: no segmentation (the identity rewards encode whole images);
- ``"u2netp"``: :class:`cgrpo.rewards.u2netp.U2NetPSegmenter`, the U2-Net-p salient-object
  model (Apache-2.0, 4.6 MB ONNX) run with onnxruntime;
- a name registered in :data:`SEGMENTERS` (a :class:`cgrpo.config.registry.Registry`) with
  ``SEGMENTERS.register(name)(factory)`` (plug a stronger local segmenter, e.g. BiRefNet or
  SAM, in your own code);
- ``"package.module:attribute"``: import ``attribute`` (a segmenter, or a factory called
  with no argument) from an installed local module;
- any callable with the segmenter signature.

:func:`crop_to_mask` then paints everything outside the mask white and crops each image to
a square around its mask, the input of DINO-Seg
(:class:`cgrpo.rewards.identity.EmbeddingIdentityReward`); :func:`paint_outside` paints
without cropping (the whole frame, as a pre-segmented ``_seg.png`` reference of the
paper's released code would be).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from cgrpo.config.registry import Registry, import_path

__all__ = [
    "SEGMENTERS",
    "Segmenter",
    "crop_to_mask",
    "make_segmenter",
    "mask_boxes",
    "paint_outside",
]


@runtime_checkable
class Segmenter(Protocol):
    """Soft subject masks (N, H, W) in [0, 1] of images (N, 3, H, W) in [0, 1]."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


#: Segmenter factories by name: ``none`` (no segmentation) and ``u2netp`` (imported on first
#: use) built in; ``SEGMENTERS.register(name)(factory)`` adds one.
SEGMENTERS: Registry[Callable[..., Segmenter | None]] = Registry(
    "segmenter", tag=False, lazy={"u2netp": "cgrpo.rewards.u2netp:U2NetPSegmenter"}
)


@SEGMENTERS.register("none")
def _no_segmenter(**_options: Any) -> None:
    """No segmentation: the identity rewards encode whole images."""
    return None


# ----------------------------------------------------------------------------- factory


class _CallableSegmenter:
    """Wrap a plain callable, checking that it returns (N, H, W) masks."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        m = self.fn(images)
        if not isinstance(m, torch.Tensor):
            m = torch.as_tensor(np.asarray(m))
        if m.dim() == 4 and m.shape[1] == 1:
            m = m[:, 0]
        n, _, h, w = images.shape
        if tuple(m.shape) != (n, h, w):
            raise ValueError(
                f"segmenter {self.name!r} returned masks of shape {tuple(m.shape)}, "
                f"expected {(n, h, w)}"
            )
        return m.float().clamp(0.0, 1.0).to(images.device)


def make_segmenter(spec: object, **options: Any) -> Segmenter | None:
    """Build a segmenter from a config value; ``None`` means "do not segment".

    ``spec``: ``None``, a registered name (``"none"``, ``"u2netp"``), an import string
    ``"package.module:attribute"``, or a callable ``images (N,3,H,W) -> masks (N,H,W)``.
    ``options`` go to the registered factory (e.g. ``model_path`` for u2netp).
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in SEGMENTERS:
            return SEGMENTERS.make(spec, **options)
        if ":" in spec:
            try:
                obj = import_path(spec)
            except (ImportError, ValueError) as exc:
                raise ValueError(f"cannot import segmenter {spec!r}: {exc}") from exc
            if isinstance(obj, type) or (not options and _is_factory(obj)):
                obj = obj(**options)
            return _CallableSegmenter(obj, spec)
        raise ValueError(
            f"{SEGMENTERS.unknown(spec)}; or 'package.module:attribute', or a callable"
        )
    if callable(spec):
        if options:
            raise ValueError("segmenter options apply only to named segmenters")
        return _CallableSegmenter(spec, getattr(spec, "__name__", type(spec).__name__))
    raise ValueError(f"segmenter must be None, a name or a callable, got {type(spec)!r}")


def _is_factory(obj: object) -> bool:
    """True for a callable that takes no required argument (a factory, not a segmenter)."""
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in sig.parameters.values()
    )


# ----------------------------------------------------------------------------- crops


def mask_boxes(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes (N, 4) as (top, left, bottom, right) pixel edges of ``masks > threshold``.

    The second result (N,) is True where the mask is non-empty; empty masks get the whole
    image as their box.
    """
    n, h, w = masks.shape
    hard = masks > threshold
    rows = hard.any(dim=2)  # (N, H)
    cols = hard.any(dim=1)  # (N, W)
    found = rows.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    top = torch.where(rows, ar_h, h).amin(dim=1)
    bottom = torch.where(rows, ar_h + 1, 0).amax(dim=1)
    left = torch.where(cols, ar_w, w).amin(dim=1)
    right = torch.where(cols, ar_w + 1, 0).amax(dim=1)
    box = torch.stack([top, left, bottom, right], dim=1).float()
    whole = torch.tensor([0.0, 0.0, float(h), float(w)], device=masks.device)
    box = torch.where(found[:, None], box, whole)
    return box, found


def _composite(
    images: torch.Tensor, masks: torch.Tensor, *, threshold: float, soft: bool
) -> torch.Tensor:
    """``image * m + (1 - m)``, with ``m = 1`` for an empty mask (nothing painted)."""
    m = masks.float().to(images.device)
    if not soft:
        m = (m > threshold).float()
    found = (m > threshold).flatten(1).any(dim=1)
    m = torch.where(found[:, None, None], m, torch.ones_like(m))
    return images.float() * m[:, None] + (1.0 - m[:, None])


def paint_outside(
    images: torch.Tensor, masks: torch.Tensor, *, threshold: float = 0.5, soft: bool = True
) -> torch.Tensor:
    """Paint outside the subject white, keeping the frame: (N, 3, H, W).

    ``out = image * m + (1 - m)`` with ``m`` the mask (soft, or hard ``m > threshold`` when
    ``soft`` is false). An image whose mask has no pixel above ``threshold`` is returned
    unchanged.
    """
    _check_masks(images, masks)
    return _composite(images, masks, threshold=threshold, soft=soft).clamp(0.0, 1.0)


def _check_masks(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(masks.shape) != (n, h, w):
        raise ValueError(f"masks must have shape {(n, h, w)}, got {tuple(masks.shape)}")


def crop_to_mask(
    images: torch.Tensor,
    masks: torch.Tensor,
    size: int = 224,
    *,
    threshold: float = 0.5,
    margin: float = 0.05,
    square: bool = True,
    soft: bool = True,
) -> torch.Tensor:
    """Paint outside the subject white and crop each image to its mask: (N, 3, size, size).

    ``composite = image * m + (1 - m)`` with ``m`` the mask (soft, or hard ``m > threshold``
    when ``soft`` is false). The crop is the bounding box of ``m > threshold`` grown by
    ``margin`` of its longer side on each side; ``square`` makes it a square centred on the
    box (the area outside the image is white), otherwise the box is stretched to the square
    output. An empty mask keeps the whole image, unpainted and without margin. Resampling is
    bilinear.
    """
    _check_masks(images, masks)
    _, _, h, w = images.shape
    comp = _composite(images, masks, threshold=threshold, soft=soft)
    box, found = mask_boxes(masks.float().to(images.device), threshold)
    top, left, bottom, right = box.unbind(dim=1)
    bh, bw = bottom - top, right - left
    grow = torch.where(found, margin * torch.maximum(bh, bw), torch.zeros_like(bh))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    if square:
        side = torch.maximum(bh, bw) + 2 * grow
        sh = sw = side
    else:
        sh, sw = bh + 2 * grow, bw + 2 * grow
    # sampling grid in grid_sample's normalised coordinates (align_corners=False)
    base = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size - 0.5
    gx = (2 * cx / w - 1)[:, None] + (2 * sw / w)[:, None] * base[None]  # (N, size)
    gy = (2 * cy / h - 1)[:, None] + (2 * sh / h)[:, None] * base[None]
    grid = torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1
    )
    # sample 1 - composite with zero padding, so that outside the image reads as white
    out = F.grid_sample(
        1.0 - comp, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return (1.0 - out).clamp(0.0, 1.0)
