"""Resolution-dependent time shift of FLUX sampling (pure float functions, torch-free).

FLUX.1's reference sampler (and diffusers' ``FluxPipeline`` with
``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)``) shifts the sigma schedule by
an amount that grows with the number of image tokens ``n``:

    mu(n) = base_shift + (max_shift - base_shift) * (n - base_len) / (max_len - base_len)
    sigma' = e^mu / (e^mu + (1 / sigma - 1))

with ``(base_len, base_shift) = (256, 0.5)`` and ``(max_len, max_shift) = (4096, 1.15)``.
The second line is the SD3 shift ``s' = shift * s / (1 + (shift - 1) * s)`` of
:func:`cgrpo.sampling.sde.sigma_schedule` with ``shift = e^mu`` (multiply numerator and
denominator by ``sigma``), so a resolution rule only has to give that one number.

Two token counts are in use:

* :func:`flux_image_tokens`: the true count, ``(H / 16) * (W / 16)`` for FLUX's 8x VAE and
  2x2 packing (1,024 tokens at 512 px, shift e^0.63 = 1.878); BFL's ``flux`` CLI and
  diffusers' pipelines use it. ``shift: auto`` in ``cgrpo eval``.
* :func:`uno_seq_len`: what the x-flux / UNO pipelines pass, ``(W // 8) * (H // 8) // 256``,
  64 times fewer (16 at 512 px, shift e^0.459 = 1.583). Customized-GRPO's released
  DreamBench evaluation samples through ``UNOPipeline``, so this is the shift its numbers were
  drawn with. ``shift: uno`` in ``cgrpo eval``.
"""

from __future__ import annotations

import math

__all__ = [
    "BASE_SEQ_LEN",
    "MAX_SEQ_LEN",
    "BASE_SHIFT",
    "MAX_SHIFT",
    "SHIFT_RULES",
    "flux_image_tokens",
    "resolution_mu",
    "resolution_shift",
    "uno_seq_len",
]

BASE_SEQ_LEN = 256  #: token count at which mu = BASE_SHIFT
MAX_SEQ_LEN = 4096  #: token count at which mu = MAX_SHIFT
BASE_SHIFT = 0.5
MAX_SHIFT = 1.15

#: The named shift rules of ``cgrpo eval``'s ``shift`` key.
SHIFT_RULES: tuple[str, ...] = ("auto", "uno")


def resolution_mu(
    seq_len: float,
    *,
    base_seq_len: float = BASE_SEQ_LEN,
    max_seq_len: float = MAX_SEQ_LEN,
    base_shift: float = BASE_SHIFT,
    max_shift: float = MAX_SHIFT,
) -> float:
    """The log-shift of ``seq_len`` image tokens, linear through two points:

        mu = base_shift + (max_shift - base_shift) * (seq_len - base_seq_len)
                                                   / (max_seq_len - base_seq_len)

    (not clamped: fewer than ``base_seq_len`` tokens give ``mu < base_shift``)."""
    if max_seq_len == base_seq_len:
        raise ValueError("max_seq_len must differ from base_seq_len")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (seq_len - base_seq_len)


def resolution_shift(seq_len: float, **line: float) -> float:
    """The SD3-style shift factor of ``seq_len`` image tokens: ``exp(resolution_mu(seq_len))``
    (``line``: :func:`resolution_mu`'s keyword arguments)."""
    return math.exp(resolution_mu(seq_len, **line))


def flux_image_tokens(height: int, width: int, *, vae_scale: int = 8) -> int:
    """Image tokens of an ``height x width`` px FLUX image: the VAE downsamples ``vae_scale``
    times and 2x2 latent patches make one token, ``(H // (2 s)) * (W // (2 s))``."""
    side = 2 * vae_scale
    return (height // side) * (width // side)


def uno_seq_len(height: int, width: int) -> int:
    """The token count the x-flux / UNO pipelines hand their schedule:
    ``(W // 8) * (H // 8) // (16 * 16)`` (1/64 of :func:`flux_image_tokens`)."""
    return (width // 8) * (height // 8) // (16 * 16)
