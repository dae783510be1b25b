"""``embedded_prompt``: download-free prompt following, from pixels and the prompt text.

::

    prompt = P * mean(P and the terms of the attributes the prompt mentions)

with background, placement, size and colour terms. From :mod:`cgrpo.world.scene` it uses
only the public palettes (``COLOURS``, ``BACKGROUNDS``), :func:`~cgrpo.world.scene.layout`
for the target geometry and :func:`~cgrpo.world.scene.parse_prompt`; the subject analysis
comes from :mod:`cgrpo.rewards.embedded_segment`. See :class:`EmbeddedPromptReward` and
``docs/rewards_embedded.md`` for the exact formulas and the known limits.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from cgrpo.rewards.embedded_segment import (
    check_reward_call,
    presence_score,
    subject_stats,
    unique_images,
)
from cgrpo.world.scene import BACKGROUNDS, COLOURS, Prompt, layout, parse_prompt

__all__ = ["EmbeddedPromptReward"]


@lru_cache(maxsize=4096)
def _parse(text: str) -> Prompt:
    return parse_prompt(text)


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
        *,
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
        images, prompts, references = check_reward_call(images, prompts, references)
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
        uniq, inverse = unique_images(references)
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
        images, prompts, references = check_reward_call(images, prompts, references)
        with torch.no_grad():
            t = self._terms(images, prompts, references)
            stacked = torch.stack(list(t.values()), dim=1)  # (B, 5)
            applies = ~torch.isnan(stacked)
            mean = torch.where(applies, stacked, torch.zeros_like(stacked)).sum(1) / applies.sum(1)
            return (t["presence"] * mean).clamp(0.0, 1.0)
