"""Pixel-only subject analysis shared by the embedded world's rewards.

What :mod:`cgrpo.rewards.embedded_identity` and :mod:`cgrpo.rewards.embedded_prompt` read
off an image, from its pixels alone (no renderer, no model; the learned segmenters of the
real tier are in :mod:`cgrpo.rewards.segment`):

- :func:`segment_subject`: the soft subject mask. The background colour ``b`` is the
  per-channel median of the 1-px border (:func:`estimate_background`) and::

      m(p) = sigmoid((||x(p) - b||_2 - t) / 0.03),   t = max(0.18, 0.3 * ||c - b||_2)

  with ``c`` the subject's base colour from a first pass at ``t = 0.18``. Stripes and checks
  are drawn at half the subject colour; over every palette pair they are >= 0.247 from the
  background, so they stay in the mask without morphology.
- :func:`subject_stats` (:class:`SubjectStats`): area, centroid, box, base colour and
  solidity of each mask of a batch.
- :func:`presence_score`: the soft "one coherent subject of plausible area" gate.
- :func:`canonical_crops`: each subject cropped to a square around it and resampled.
- :func:`check_reward_call` and :func:`unique_images`: the call validation and the
  reference deduplication of both rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cgrpo.rewards.images import check_batch

__all__ = [
    "MASK_RELATIVE",
    "MASK_SOFTNESS",
    "MASK_THRESHOLD",
    "SOLIDITY_RAMP",
    "SubjectStats",
    "canonical_crops",
    "check_reward_call",
    "estimate_background",
    "presence_score",
    "segment_subject",
    "subject_stats",
    "unique_images",
]

#: Default colour-distance threshold of the subject mask (RGB Euclidean, images in [0, 1]).
MASK_THRESHOLD = 0.18
#: Default width of the sigmoid ramp of the soft mask.
MASK_SOFTNESS = 0.03
#: Default relative threshold: fraction of the subject/background contrast.
MASK_RELATIVE = 0.3


# ----------------------------------------------------------------------------- validation


def check_reward_call(
    images: object, prompts: object, references: object
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Validate an embedded reward's call; the references move to the images' device."""
    imgs, prompts, refs = check_batch(images, prompts, references)
    assert refs is not None  # need_references=True
    return imgs, prompts, refs.to(imgs.device)


# ----------------------------------------------------------------------------- segmentation


def estimate_background(images: torch.Tensor, frame: int = 1) -> torch.Tensor:
    """Background colour (B, 3): per-channel median of the ``frame``-pixel border of each image."""
    b, c, h, w = images.shape
    top = images[:, :, :frame, :].reshape(b, c, -1)
    bottom = images[:, :, h - frame :, :].reshape(b, c, -1)
    left = images[:, :, frame : h - frame, :frame].reshape(b, c, -1)
    right = images[:, :, frame : h - frame, w - frame :].reshape(b, c, -1)
    border = torch.cat([top, bottom, left, right], dim=2)
    return border.median(dim=2).values


def _distance_to(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Per-pixel RGB distance (B, H, W) of ``images`` to one colour (B, 3) per image."""
    diff = images - colours[:, :, None, None]
    return (diff * diff).sum(dim=1).sqrt()


def _base_colour(images: torch.Tensor, core: torch.Tensor) -> torch.Tensor:
    """Mean colour (B, 3) of the brightest quarter of each image's ``core`` pixels (B, H, W).

    Pixels of equal brightness are taken in raster order (a stable sort), so an image's
    colour does not depend on the other images of its batch: ``topk`` to the batch's largest
    quarter broke ties differently for different batches (8-bit images have many ties)."""
    flat = images.flatten(2)  # (B, 3, HW)
    core_flat = core.flatten(1)
    bright = flat.sum(dim=1).masked_fill(~core_flat, -1.0)
    n_core = core_flat.sum(dim=1)
    k = ((n_core + 3) // 4).clamp_min(1)
    kmax = int(k.max())
    top = bright.sort(dim=1, descending=True, stable=True).indices[:, :kmax]  # (B, kmax)
    take = (torch.arange(kmax, device=images.device)[None] < k[:, None]).float()
    picked = torch.gather(flat, 2, top[:, None, :].expand(-1, 3, -1))
    return (picked * take[:, None]).sum(dim=2) / take.sum(dim=1, keepdim=True)


def _erode(hard: torch.Tensor) -> torch.Tensor:
    """3x3 binary erosion of a (B, H, W) bool mask (outside the image counts as background)."""
    h, w = hard.shape[1:]
    p = F.pad(hard, (1, 1, 1, 1))
    rows = p[:, :, :w] & p[:, :, 1 : w + 1] & p[:, :, 2:]
    return rows[:, :h] & rows[:, 1 : h + 1] & rows[:, 2:]


def _segment(
    images: torch.Tensor, threshold: float, softness: float, *, relative: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft mask, background colour, core mask and base colour of float32 images."""
    bg = estimate_background(images)
    dist = _distance_to(images, bg)
    hard = dist > threshold
    eroded = _erode(hard)
    core = torch.where(eroded.flatten(1).any(dim=1)[:, None, None], eroded, hard)
    colour = _base_colour(images, core)
    thr = torch.full_like(bg[:, 0], threshold)
    if relative > 0:
        contrast = (colour - bg).pow(2).sum(dim=1).sqrt()
        thr = torch.maximum(thr, relative * contrast)
    mask = torch.sigmoid((dist - thr[:, None, None]) / softness)
    return mask, bg, core, colour


def segment_subject(
    images: torch.Tensor,
    threshold: float = MASK_THRESHOLD,
    softness: float = MASK_SOFTNESS,
    *,
    relative: float = MASK_RELATIVE,
    close: bool = False,
) -> torch.Tensor:
    """Soft subject mask (B, H, W) in [0, 1] of images (B, 3, H, W) in [0, 1].

    ``m = sigmoid((||x - b|| - t) / softness)`` with ``b`` the per-channel median colour of
    the 1-pixel border (:func:`estimate_background`) and the per-image threshold
    ``t = max(threshold, relative * ||c - b||)``, ``c`` the subject's base colour (mean of the
    brightest quarter of the eroded first-pass mask ``||x - b|| > threshold``). ``m > 0.5`` is
    the hard mask. The relative part makes an edge pixel count when roughly a third of it is
    covered whatever the contrast, instead of ~15 % for a saturated subject on white.

    The absolute threshold (0.18) lies below the smallest subject/background distance of the
    palette (0.247, green stripes on black), so the darker pattern stripes (half the subject
    colour) stay in the mask on every background. ``close=True`` adds a 3x3 morphological
    closing that re-fills stripes a generator drew too close to the background, at the cost
    of also filling the notches of concave shapes (star, moon, heart); it is off by default.

    Limits: the subject must leave most of the border free (the median needs a background
    majority there); stripes darker than the background by less than ``threshold`` (a dark
    subject on black) are lost; a textured background counts as subject.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    mask = _segment(images.float(), threshold, softness, relative=relative)[0]
    if close:
        m = F.max_pool2d(mask[:, None], 3, stride=1, padding=1)
        m = -F.max_pool2d(-m, 3, stride=1, padding=1)
        mask = torch.maximum(mask, m[:, 0])
    return mask


# ----------------------------------------------------------------------------- statistics


@dataclass
class SubjectStats:
    """What the rewards read off one batch of images (all tensors have leading dim B).

    - ``mask``: soft mask (B, H, W); ``hard``: ``mask > 0.5``; ``core``: ``hard`` eroded 3x3
      (falls back to ``hard`` where the erosion is empty).
    - ``background``: border-median colour (B, 3).
    - ``area``: soft mask area as a fraction of the image (B,).
    - ``centroid``: soft-mask centroid (row, col) in pixels, pixel centres at i + 0.5 (B, 2).
    - ``bbox``: hard-mask box (row0, col0, row1, col1) in pixel-edge coordinates (B, 4).
    - ``colour``: base colour (B, 3): mean of the brightest quarter of the core pixels, so
      that the darker pattern stripes (half the subject colour) do not bias it.
    - ``present``: whether the hard mask is non-empty (B,).
    - ``solidity``: fraction of the hard mask that survives a 3x3 erosion (B,): 0.16-0.9 for
      the world's subjects at 32 px, ~0 for the speckle that noise leaves in the mask.
    """

    mask: torch.Tensor
    hard: torch.Tensor
    core: torch.Tensor
    background: torch.Tensor
    area: torch.Tensor
    centroid: torch.Tensor
    bbox: torch.Tensor
    colour: torch.Tensor
    present: torch.Tensor
    solidity: torch.Tensor


def _first_last(any_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first and last True along dim 1 of a (B, N) bool tensor (0, N-1 if none)."""
    n = any_.shape[1]
    idx = torch.arange(n, device=any_.device).expand_as(any_)
    big = torch.full_like(idx, n)
    first = torch.where(any_, idx, big).min(dim=1).values.clamp(max=n - 1)
    last = torch.where(any_, idx, torch.full_like(idx, -1)).max(dim=1).values.clamp(min=0)
    return first, last


def subject_stats(
    images: torch.Tensor,
    threshold: float = MASK_THRESHOLD,
    softness: float = MASK_SOFTNESS,
    *,
    relative: float = MASK_RELATIVE,
) -> SubjectStats:
    """Segment ``images`` (B, 3, H, W) and summarise each subject (see :class:`SubjectStats`)."""
    images = images.float()
    b, _, h, w = images.shape
    mask, bg, _, colour = _segment(images, threshold, softness, relative=relative)
    hard = mask > 0.5
    eroded = _erode(hard)
    core = torch.where(eroded.flatten(1).any(dim=1)[:, None, None], eroded, hard)
    n_hard = hard.flatten(1).sum(dim=1)
    present = n_hard > 0
    solidity = eroded.flatten(1).sum(dim=1) / n_hard.clamp_min(1)

    total = mask.flatten(1).sum(dim=1)
    area = total / (h * w)
    rows = torch.arange(h, device=images.device, dtype=torch.float32) + 0.5
    cols = torch.arange(w, device=images.device, dtype=torch.float32) + 0.5
    denom = total.clamp_min(1e-6)
    cy = (mask.sum(dim=2) * rows).sum(dim=1) / denom
    cx = (mask.sum(dim=1) * cols).sum(dim=1) / denom
    centroid = torch.stack([cy, cx], dim=1)

    r0, r1 = _first_last(hard.any(dim=2))
    c0, c1 = _first_last(hard.any(dim=1))
    bbox = torch.stack([r0, c0, r1 + 1, c1 + 1], dim=1).float()
    colour = torch.where(present[:, None], colour, bg)
    return SubjectStats(mask, hard, core, bg, area, centroid, bbox, colour, present, solidity)


def unique_images(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct images of a batch and, per input row, the index of its distinct image."""
    if images.shape[0] == 1:
        return images, torch.zeros(1, dtype=torch.long, device=images.device)
    uniq, inverse = torch.unique(images.flatten(1), dim=0, return_inverse=True)
    return uniq.view(-1, *images.shape[1:]), inverse


def _smoothstep(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


#: Solidity ramp of the presence gate at 32 px: speckle below 0.04, a subject above 0.12.
#: Below 32 px both ends scale with (H / 32)^2 (a 3x3 erosion then removes more of a subject).
SOLIDITY_RAMP = (0.04, 0.12)


def presence_score(
    stats: SubjectStats, lo: tuple[float, float], hi: tuple[float, float]
) -> torch.Tensor:
    """Is there one coherent subject? Soft, in [0, 1] (B,).

    ``P = smoothstep(ln a; ln lo0, ln lo1) * (1 - smoothstep(ln a; ln hi0, ln hi1))
    * smoothstep(solidity; 0.04 r, 0.12 r)`` with ``a`` the soft mask area fraction and
    ``r = min(1, H / 32)^2``: 0 below ``lo0``, 1 between ``lo1`` and ``hi0``, 0 above ``hi1``
    (noise fills the frame), 0 when the mask is speckle rather than a blob (a noisy blank
    image), and 0 for an empty mask.
    """
    la = stats.area.clamp_min(1e-8).log()
    rise = _smoothstep(la, math.log(lo[0]), math.log(lo[1]))
    fall = 1.0 - _smoothstep(la, math.log(hi[0]), math.log(hi[1]))
    r = min(1.0, stats.mask.shape[1] / 32.0) ** 2
    solid = _smoothstep(stats.solidity, SOLIDITY_RAMP[0] * r, SOLIDITY_RAMP[1] * r)
    return rise * fall * solid * stats.present.float()


# ----------------------------------------------------------------------------- canonical crops


def canonical_crops(
    images: torch.Tensor,
    stats: SubjectStats,
    size: int = 24,
    *,
    crop: str = "moments",
    extent: float = 2.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop each subject to a square and resample it to ``size`` x ``size`` (bilinear).

    ``crop="moments"`` (default): the square is centred on the soft-mask centroid with side
    ``extent * sqrt(mask area)``, which scales with the subject and is not moved by the thin,
    threshold-sensitive tips of a star or a crescent. ``crop="bbox"``: the square has the
    hard mask's bounding-box centre and side ``max(box height, box width)`` (DINO-Seg style).
    Both keep the aspect ratio. Returns the crops with non-mask pixels painted white,
    ``m * x + (1 - m)`` (B, 3, s, s), the canonical soft masks (B, s, s) and the canonical
    core (eroded hard) masks (B, s, s).
    """
    b, _, h, w = images.shape
    if crop == "bbox":
        r0, c0, r1, c1 = stats.bbox.unbind(dim=1)
        side = torch.maximum(r1 - r0, c1 - c0).clamp_min(1.0)
        cy = (r0 + r1) / 2
        cx = (c0 + c1) / 2
    elif crop == "moments":
        side = extent * (stats.area * h * w).clamp_min(1.0).sqrt()
        cy, cx = stats.centroid.unbind(dim=1)
    else:
        raise ValueError(f"crop must be 'moments' or 'bbox', got {crop!r}")
    # sampling grid in grid_sample's normalised coordinates (align_corners=False)
    base = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size * 2 - 1
    gx = (2 * cx / w - 1)[:, None] + (side / w)[:, None] * base[None]  # (B, s)
    gy = (2 * cy / h - 1)[:, None] + (side / h)[:, None] * base[None]
    grid = torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1
    )
    stack = torch.cat([images, stats.mask[:, None], stats.core[:, None].float()], dim=1)
    out = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = out[:, 3]
    crops = out[:, :3] * m[:, None] + (1.0 - m[:, None])
    return crops, m, out[:, 4]
