"""``embedded_identity``: download-free identity preservation ("DINO-Seg") from pixels.

::

    identity = P * S^0.4 * C^0.3 * T^0.3

with S the soft IoU of the canonical (centred, scale-normalised) masks, C = exp(-||c_gen -
c_ref||^2 / 0.1) on the base colours, T the SSIM-like agreement of the relative luma detail
(the pattern) inside both masks and P a presence gate (one coherent blob of plausible area).
Segmentation, statistics and crops come from :mod:`cgrpo.rewards.embedded_segment`. See
:class:`EmbeddedIdentityReward` and ``docs/rewards_embedded.md`` for the exact formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cgrpo.rewards.embedded_segment import (
    canonical_crops,
    check_reward_call,
    presence_score,
    subject_stats,
    unique_images,
)

__all__ = ["EmbeddedIdentityReward"]

# ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)


def _luma(images: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, device=images.device, dtype=images.dtype)
    return (images * w[None, :, None, None]).sum(dim=1)


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
        *,
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
        crops, mask, core = canonical_crops(
            images, stats, self.canonical, crop=self.crop, extent=self.extent
        )
        presence = presence_score(stats, (0.002, 0.01), (0.6, 0.85))
        return _IdentityFeatures(crops, mask, core, stats.colour, presence)

    def _reference_features(self, references: torch.Tensor) -> _IdentityFeatures:
        if not self.dedup_references:
            return self._features(references)
        uniq, inverse = unique_images(references)
        return self._features(uniq).index(inverse)

    def terms(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-image terms (B,): ``shape`` S, ``colour`` C, ``pattern`` T, ``presence`` P."""
        images, prompts, references = check_reward_call(images, prompts, references)
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
        images, prompts, references = check_reward_call(images, prompts, references)
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
