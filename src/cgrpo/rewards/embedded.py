"""Download-free rewards for the embedded world: identity ("DINO-Seg") and prompt following.

Both rewards look only at pixels, the reference image and the prompt text. They never call
the renderer and never see its hidden state; from :mod:`cgrpo.world.scene` they use only the
public palettes (``COLOURS``, ``BACKGROUNDS``), :func:`~cgrpo.world.scene.layout` for the
target geometry and :func:`~cgrpo.world.scene.parse_prompt`.

Shared machinery
----------------
:func:`segment_subject` estimates each image's background colour ``b`` as the per-channel
median of its 1-px border and returns the soft mask::

    m(p) = sigmoid((||x(p) - b||_2 - t) / 0.03),   t = max(0.18, 0.3 * ||c - b||_2)

with ``c`` the subject's base colour from a first pass at ``t = 0.18``. Stripes and checks
are drawn at half the subject colour; over every palette pair they are >= 0.247 from the
background, so they stay in the mask without morphology. :func:`subject_stats` reads the
area, centroid, box, base colour and solidity of each mask off a batch.

Rewards
-------
``embedded_identity`` (:class:`EmbeddedIdentityReward`)::

    identity = P * S^0.4 * C^0.3 * T^0.3

with S the soft IoU of the canonical (centred, scale-normalised) masks, C = exp(-||c_gen -
c_ref||^2 / 0.1) on the base colours, T the SSIM-like agreement of the relative luma detail
(the pattern) inside both masks and P a presence gate (one coherent blob of plausible area).

``embedded_prompt`` (:class:`EmbeddedPromptReward`)::

    prompt = P * mean(P and the terms of the attributes the prompt mentions)

with background, placement, size and colour terms. See the class docstrings and
``docs/rewards_embedded.md`` for the exact formulas and the known limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from cgrpo.rewards.base import register_reward
from cgrpo.rewards.images import check_batch
from cgrpo.world.scene import BACKGROUNDS, COLOURS, Prompt, layout, parse_prompt

__all__ = [
    "EmbeddedIdentityReward",
    "EmbeddedPromptReward",
    "SubjectStats",
    "canonical_crops",
    "estimate_background",
    "presence_score",
    "segment_subject",
    "subject_stats",
]

#: Default colour-distance threshold of the subject mask (RGB Euclidean, images in [0, 1]).
MASK_THRESHOLD = 0.18
#: Default width of the sigmoid ramp of the soft mask.
MASK_SOFTNESS = 0.03
#: Default relative threshold: fraction of the subject/background contrast.
MASK_RELATIVE = 0.3

# ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- validation


def _check_call(
    images: object, prompts: object, references: object
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
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
    """Mean colour (B, 3) of the brightest quarter of each image's ``core`` pixels (B, H, W)."""
    flat = images.flatten(2)  # (B, 3, HW)
    core_flat = core.flatten(1)
    bright = flat.sum(dim=1).masked_fill(~core_flat, -1.0)
    n_core = core_flat.sum(dim=1)
    k = ((n_core + 3) // 4).clamp_min(1)
    kmax = int(k.max())
    top = bright.topk(kmax, dim=1).indices  # (B, kmax)
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
    images: torch.Tensor, threshold: float, softness: float, relative: float
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
    mask = _segment(images.float(), threshold, softness, relative)[0]
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
    relative: float = MASK_RELATIVE,
) -> SubjectStats:
    """Segment ``images`` (B, 3, H, W) and summarise each subject (see :class:`SubjectStats`)."""
    images = images.float()
    b, _, h, w = images.shape
    mask, bg, _, colour = _segment(images, threshold, softness, relative)
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


def _unique_images(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


# ----------------------------------------------------------------------------- identity


def _luma(images: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, device=images.device, dtype=images.dtype)
    return (images * w[None, :, None, None]).sum(dim=1)


def canonical_crops(
    images: torch.Tensor,
    stats: SubjectStats,
    size: int = 24,
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


@dataclass
class _IdentityFeatures:
    crops: torch.Tensor  # (N, 3, s, s) white-painted canonical crops
    mask: torch.Tensor  # (N, s, s) canonical soft masks
    core: torch.Tensor  # (N, s, s) canonical core masks
    colour: torch.Tensor  # (N, 3) base colours
    presence: torch.Tensor  # (N,) presence gate

    def index(self, idx: torch.Tensor) -> _IdentityFeatures:
        return _IdentityFeatures(
            self.crops[idx], self.mask[idx], self.core[idx], self.colour[idx], self.presence[idx]
        )


@register_reward("embedded_identity")
class EmbeddedIdentityReward:
    """Identity preservation in the DINO-Seg spirit, from pixels only.

    The generated image and its reference are each segmented (:func:`subject_stats`),
    cropped to a square around the subject and resampled to ``canonical`` x ``canonical``
    (24) with non-mask pixels painted white (:func:`canonical_crops`). With ``M_g, M_r`` the
    canonical soft masks, ``K = [core_g > 0.9] * [core_r > 0.9]`` the common interior,
    ``L`` the luma (BT.601) of a crop and ``D = L / mean_K(L) - 1`` its relative detail::

        S = sum(min(M_g, M_r)) / sum(max(M_g, M_r))                          shape (soft IoU)
        C = exp(-||c_g - c_r||^2 / tau_colour)                               colour, tau 0.1
        T = clamp((2 cov_K(D_g, D_r) + k) / (var_K(D_g) + var_K(D_r) + k), 0, 1)   pattern
        P = smoothstep window on the generated mask area fraction a (in ln a):
            0 below 0.2 %, 1 from 1 % to 60 %, 0 above 85 %                  presence
        identity = P * S^0.4 * C^0.3 * T^0.3                                 in [0, 1]

    ``c`` is the base colour (mean of the brightest quarter of the interior pixels, so the
    half-shade stripes do not bias it); ``k = 0.01``. ``T`` is ~1 for two plain subjects or
    two aligned copies of a pattern, ~0 for plain against patterned or for orthogonal patterns
    (horizontal vs vertical stripes), and 0 where the interiors do not overlap. Position,
    size and background do not enter: the canonical crop removes them. The weighted
    geometric mean makes every factor necessary: a recoloured subject or pure noise (whose
    mask fills the frame, P = 0) cannot score high on shape alone.

    References are deduplicated (``torch.unique`` over flattened rows) before their features
    are computed, since the G samples of a group share one reference.
    """

    name = "embedded_identity"

    def __init__(
        self,
        canonical: int = 24,
        crop: str = "moments",
        extent: float = 2.2,
        tau_colour: float = 0.1,
        texture_k: float = 0.01,
        weights: tuple[float, float, float] = (0.4, 0.3, 0.3),
        dedup_references: bool = True,
    ) -> None:
        if canonical < 4:
            raise ValueError(f"canonical must be >= 4, got {canonical}")
        if crop not in ("moments", "bbox"):
            raise ValueError(f"crop must be 'moments' or 'bbox', got {crop!r}")
        if extent <= 0 or tau_colour <= 0 or texture_k <= 0:
            raise ValueError("extent, tau_colour and texture_k must be positive")
        if len(weights) != 3 or any(wt < 0 for wt in weights):
            raise ValueError(f"weights must be three non-negative floats, got {weights}")
        self.canonical = canonical
        self.crop = crop
        self.extent = extent
        self.tau_colour = tau_colour
        self.texture_k = texture_k
        self.weights = tuple(float(wt) for wt in weights)
        self.dedup_references = dedup_references

    def _features(self, images: torch.Tensor) -> _IdentityFeatures:
        stats = subject_stats(images)
        crops, mask, core = canonical_crops(images, stats, self.canonical, self.crop, self.extent)
        presence = presence_score(stats, (0.002, 0.01), (0.6, 0.85))
        return _IdentityFeatures(crops, mask, core, stats.colour, presence)

    def _reference_features(self, references: torch.Tensor) -> _IdentityFeatures:
        if not self.dedup_references:
            return self._features(references)
        uniq, inverse = _unique_images(references)
        return self._features(uniq).index(inverse)

    def terms(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-image terms (B,): ``shape`` S, ``colour`` C, ``pattern`` T, ``presence`` P."""
        images, prompts, references = _check_call(images, prompts, references)
        with torch.no_grad():
            return self._terms(images, references)

    def _terms(self, images: torch.Tensor, references: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self._features(images)
        r = self._reference_features(references)
        inter = torch.minimum(g.mask, r.mask).flatten(1).sum(1)
        union = torch.maximum(g.mask, r.mask).flatten(1).sum(1)
        shape = inter / union.clamp_min(1e-6)

        dc = g.colour - r.colour
        colour = torch.exp(-(dc * dc).sum(dim=1) / self.tau_colour)

        k = ((g.core > 0.9) & (r.core > 0.9)).flatten(1).float()
        ksum = k.sum(dim=1).clamp_min(1e-6)
        lg = _luma(g.crops).flatten(1)
        lr = _luma(r.crops).flatten(1)
        dg = lg / ((lg * k).sum(1) / ksum).clamp_min(1e-3)[:, None] - 1.0
        dr = lr / ((lr * k).sum(1) / ksum).clamp_min(1e-3)[:, None] - 1.0
        cov = (k * dg * dr).sum(1) / ksum
        var_g = (k * dg * dg).sum(1) / ksum
        var_r = (k * dr * dr).sum(1) / ksum
        c = self.texture_k
        pattern = ((2 * cov + c) / (var_g + var_r + c)).clamp(0.0, 1.0)
        pattern = torch.where(k.sum(1) > 0, pattern, torch.zeros_like(pattern))
        return {"shape": shape, "colour": colour, "pattern": pattern, "presence": g.presence}

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        """Identity score (B,) in [0, 1]; see the class docstring for the formula."""
        images, prompts, references = _check_call(images, prompts, references)
        with torch.no_grad():
            t = self._terms(images, references)
            ws, wc, wt = self.weights
            eps = 1e-6
            score = (
                t["presence"]
                * t["shape"].clamp_min(eps) ** ws
                * t["colour"].clamp_min(eps) ** wc
                * t["pattern"].clamp_min(eps) ** wt
            )
            return score.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- prompt


@lru_cache(maxsize=4096)
def _parse(text: str) -> Prompt:
    return parse_prompt(text)


@register_reward("embedded_prompt")
class EmbeddedPromptReward:
    """Prompt following: a soft score per attribute the prompt mentions, from pixels only.

    Terms (each in [0, 1]; H is the image side, ``s = H / 32``)::

        presence   P = window on the mask area fraction a: 0 below 0.5 %, 1 on [2 %, 60 %],
                       0 above 85 % (smoothstep in ln a)                         always
        background exp(-||b - BACKGROUNDS[name]||^2 / 0.02), b the border median    if named
        placement  exp(-||mu - mu*||^2 / (18 s^2)), mu the mask centroid (px)       if named
        size       exp(-(ln(sqrt(A) / sqrt(A*)))^2 / 0.03), A the soft mask area    if named
        colour     exp(-||c - COLOURS[name]||^2 / 0.05), c the base colour          if named

        prompt = P * mean(P and the named terms)

    Targets are calibrated on the reference (the same subject, centred, medium, on white),
    so they hold for any shape: ``mu* = layout(prompt).centre + (mu_ref - layout(None).centre)
    * h*/h_ref`` and ``A* = A_ref * (h*/h_ref)^2`` with ``h`` the half-sizes from :func:`layout`.
    Attributes the prompt does not mention are not scored ("a circle" on black is as good as
    on white). Placement, size and colour are 0 when no subject is found.
    """

    name = "embedded_prompt"

    def __init__(
        self,
        tau_background: float = 0.02,
        tau_position_px: float = 18.0,
        tau_size: float = 0.03,
        tau_colour: float = 0.05,
        area_window: tuple[float, float, float, float] = (0.005, 0.02, 0.6, 0.85),
    ) -> None:
        for nm, v in (
            ("tau_background", tau_background),
            ("tau_position_px", tau_position_px),
            ("tau_size", tau_size),
            ("tau_colour", tau_colour),
        ):
            if v <= 0:
                raise ValueError(f"{nm} must be positive, got {v}")
        lo0, lo1, hi0, hi1 = area_window
        if not 0 < lo0 < lo1 <= hi0 < hi1:
            raise ValueError(f"area_window must be increasing fractions, got {area_window}")
        self.tau_background = tau_background
        self.tau_position_px = tau_position_px
        self.tau_size = tau_size
        self.tau_colour = tau_colour
        self.area_window = area_window

    def terms(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-image terms (B,) by name; NaN where the prompt does not mention the attribute.

        Keys: ``presence``, ``background``, ``placement``, ``size``, ``colour``.
        """
        images, prompts, references = _check_call(images, prompts, references)
        with torch.no_grad():
            return self._terms(images, prompts, references)

    def _terms(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        dev = images.device
        b, _, h, w = images.shape
        if h != w or references.shape[2] != references.shape[3]:
            raise ValueError(
                "embedded_prompt needs square images (B, 3, H, H) and references (B, 3, H', H'), "
                f"got {tuple(images.shape)} and {tuple(references.shape)}"
            )
        hr = references.shape[2]
        parsed = [_parse(p) for p in prompts]
        g = subject_stats(images)
        uniq, inverse = _unique_images(references)
        ref_stats = subject_stats(uniq)
        ref_centroid, ref_area = ref_stats.centroid[inverse], ref_stats.area[inverse]
        ref_present = ref_stats.present[inverse]
        nan = torch.full((b,), float("nan"), device=dev)
        lo0, lo1, hi0, hi1 = self.area_window
        presence = presence_score(g, (lo0, lo1), (hi0, hi1))

        # background
        bg_named = [p.background is not None for p in parsed]
        bg_target = torch.tensor(
            [BACKGROUNDS[p.background] if p.background else (0.0, 0.0, 0.0) for p in parsed],
            device=dev,
        )
        d = g.background - bg_target
        background = torch.exp(-(d * d).sum(1) / self.tau_background)
        background = torch.where(torch.tensor(bg_named, device=dev), background, nan)

        # geometry targets, calibrated on the reference
        ref_cy, ref_cx, ref_half = layout(None, size=hr)
        geo = torch.tensor([layout(p, size=h) for p in parsed], device=dev)  # (B, 3)
        k = geo[:, 2] / ref_half  # target half-size / reference half-size, in pixels
        ref_off = ref_centroid - torch.tensor([ref_cy, ref_cx], device=dev)
        target_centre = geo[:, :2] + ref_off * k[:, None]
        dmu = g.centroid - target_centre
        tau_pos = self.tau_position_px * (h / 32.0) ** 2
        placement = torch.exp(-(dmu * dmu).sum(1) / tau_pos)
        placement = torch.where(g.present, placement, torch.zeros_like(placement))
        pos_named = torch.tensor([p.position is not None for p in parsed], device=dev)
        placement = torch.where(pos_named, placement, nan)

        target_area = ref_area * (k * hr / h) ** 2  # area fraction of the generated image
        log_ratio = 0.5 * (g.area.clamp_min(1e-8).log() - target_area.clamp_min(1e-8).log())
        size = torch.exp(-(log_ratio * log_ratio) / self.tau_size)
        size = torch.where(g.present & ref_present, size, torch.zeros_like(size))
        size_named = torch.tensor([p.size is not None for p in parsed], device=dev)
        size = torch.where(size_named, size, nan)

        col_named = torch.tensor([p.colour is not None for p in parsed], device=dev)
        col_target = torch.tensor(
            [COLOURS[p.colour] if p.colour else (0.0, 0.0, 0.0) for p in parsed], device=dev
        )
        dc = g.colour - col_target
        colour = torch.exp(-(dc * dc).sum(1) / self.tau_colour)
        colour = torch.where(g.present, colour, torch.zeros_like(colour))
        colour = torch.where(col_named, colour, nan)
        return {
            "presence": presence,
            "background": background,
            "placement": placement,
            "size": size,
            "colour": colour,
        }

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        """Prompt score (B,) in [0, 1]: ``P * mean(applicable terms)`` (class docstring)."""
        images, prompts, references = _check_call(images, prompts, references)
        with torch.no_grad():
            t = self._terms(images, prompts, references)
            stacked = torch.stack(list(t.values()), dim=1)  # (B, 5)
            applies = ~torch.isnan(stacked)
            mean = torch.where(applies, stacked, torch.zeros_like(stacked)).sum(1) / applies.sum(1)
            return (t["presence"] * mean).clamp(0.0, 1.0)
