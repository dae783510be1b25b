"""Packed FLUX latent tokens and their rotary position ids.

Latents and tokens
    A sample's latent is the *packed* FLUX latent: the VAE latent ``(C, h, w)`` cut into
    2x2 patches, i.e. ``(h/2 * w/2, 4C)`` tokens (``(1024, 64)`` at 512 px), see
    :func:`pack_latents` / :func:`unpack_latents`. The rollout, the SDE and the log-probs
    all work on these packed tokens.

Position ids
    The reference tokens, concatenated after the image tokens, get their own rotary
    position ids (``FluxConfig.position_scheme``), see :func:`position_ids`:

    * ``kontext`` (FLUX.1 Kontext, as diffusers' ``FluxKontextPipeline``): same spatial
      ids as a target-sized grid, first id component 1 instead of 0;
    * ``uno`` (UNO's "UnoPE", FLUX.1-dev + the UNO LoRA): first component 0, spatial ids
      shifted diagonally past the target, i.e. row ids offset by the target's height and
      column ids by its width, both in latent-patch units (64 at 512 px); with several
      references, each is shifted past the previous one too.

    A reference need not have the target's size (Kontext prepares a 1024 px class
    reference for a 512 px target, see :mod:`cgrpo.policies.flux.reference`): its ids
    span its own grid.

    Text tokens have ids 0 (as in every FLUX pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pack_latents", "position_ids", "unpack_latents"]


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) VAE latents -> (B, h/2 * w/2, 4C) tokens (2x2 patches, FLUX order)."""
    b, c, h, w = z.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even to pack 2x2, got {h}x{w}")
    z = z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: (B, h/2 * w/2, 4C) -> (B, C, h, w)."""
    b, n, c4 = tokens.shape
    if n != (h // 2) * (w // 2):
        raise ValueError(f"{n} tokens do not tile a {h}x{w} latent in 2x2 patches")
    z = tokens.reshape(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(b, c4 // 4, h, w)


def _grid_ids(
    rows: int, cols: int, first: float, *, row_offset: int = 0, col_offset: int = 0
) -> torch.Tensor:
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = first
    ids[..., 1] = torch.arange(rows)[:, None] + row_offset
    ids[..., 2] = torch.arange(cols)[None, :] + col_offset
    return ids.reshape(rows * cols, 3)


def position_ids(
    scheme: str, rows: int, cols: int, *, ref_shapes: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary ids ``(image ids (rows*cols, 3), reference ids (sum of r*c, 3))``.

    ``rows``/``cols`` are the target's size in packed tokens (latent patches),
    ``ref_shapes`` each reference's ``(r, c)``, in the order their tokens follow the image.
    The target always gets ``(0, i, j)``. Under ``kontext`` the (single) reference gets
    ``(1, i, j)``. Under ``uno`` reference k gets ``(0, i + R_k, j + C_k)`` with
    ``R_0 = rows``, ``C_0 = cols`` and ``R_{k+1} = R_k + r_k``, ``C_{k+1} = C_k + c_k``:
    each reference shifted diagonally past the target and every reference before it
    (UNO's multi-reference construction, its default ``pe='d'``).
    """
    img = _grid_ids(rows, cols, 0.0)
    if scheme == "kontext":
        if len(ref_shapes) != 1:
            raise ValueError(
                f"position_scheme kontext takes one reference per pair, got {len(ref_shapes)}: "
                "several references are UNO's (flux.position_scheme=uno)"
            )
        ref = _grid_ids(*ref_shapes[0], 1.0)
    elif scheme == "uno":
        parts, dr, dc = [], rows, cols
        for r, c in ref_shapes:
            parts.append(_grid_ids(r, c, 0.0, row_offset=dr, col_offset=dc))
            dr, dc = dr + r, dc + c
        ref = torch.cat(parts) if parts else torch.zeros(0, 3)
    else:
        raise ValueError(f"unknown position scheme {scheme!r}; valid: kontext, uno")
    return img, ref
