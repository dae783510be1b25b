"""Group-normalised advantages (the "G" in GRPO).

Each prompt is sampled ``group_size`` times; a sample's advantage is its reward standardised
within its own group, so no value network is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["advantages_by_group", "group_advantages"]


def group_advantages(
    rewards: Tensor | Sequence[float], group_size: int, eps: float = 1e-8, *, unbiased: bool = False
) -> Tensor:
    """Standardise rewards within consecutive groups of ``group_size``.

    For group ``k`` holding rewards ``r_1..r_G`` (``G = group_size``)::

        A_i = (r_i - mean_k) / (std_k + eps)
        mean_k = (1/G) sum_j r_j
        std_k  = sqrt((1/G) sum_j (r_j - mean_k)^2)     # population std (unbiased=False)
        std_k  = sqrt((1/(G-1)) sum_j (r_j - mean_k)^2) # with unbiased=True (torch's default
                                                        # std, the paper's code; G >= 2)

    A group whose rewards are all equal (this includes ``group_size == 1``) carries no
    preference signal and gets advantage exactly 0 everywhere, never NaN and never rounding
    noise amplified by ``1 / eps``.

    Args:
        rewards: 1-D rewards ordered group by group: ``rewards[k*G:(k+1)*G]`` is group ``k``.
        group_size: ``G`` (>= 1); ``len(rewards)`` must be a multiple of it.
        eps: added to the std in the denominator (>= 0).
        unbiased: Bessel's correction in the std (``grpo.std: unbiased``).

    Returns:
        Advantages with the shape of ``rewards``, in ``rewards``' floating dtype (float32 for
        integer/bool input). The arithmetic is done in float64.

    Raises:
        ValueError: empty or non-1-D rewards, ``group_size < 1``, a length not divisible by
            ``group_size``, negative ``eps``, or NaN/inf rewards (the message gives how many and
            their indices).
    """
    r = torch.as_tensor(rewards)
    if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    group_size = int(group_size)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if r.ndim != 1:
        raise ValueError(
            f"rewards must be 1-D (ordered group by group), got shape {tuple(r.shape)}"
        )
    n = r.shape[0]
    if n == 0:
        raise ValueError("rewards is empty: need at least one group of rewards")
    if n % group_size != 0:
        raise ValueError(f"number of rewards ({n}) is not divisible by group_size ({group_size})")
    out_dtype = r.dtype if r.is_floating_point() else torch.float32
    r64 = r.detach().to(torch.float64)
    bad = ~torch.isfinite(r64)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().tolist()
        shown = idx if len(idx) <= 20 else idx[:20] + ["..."]
        raise ValueError(f"{len(idx)} non-finite (NaN/inf) reward(s) at indices {shown}")

    g = r64.reshape(n // group_size, group_size)
    mean = g.mean(dim=1, keepdim=True)
    if unbiased and group_size < 2:
        raise ValueError("the unbiased std needs group_size >= 2")
    std = g.std(dim=1, unbiased=unbiased, keepdim=True)
    constant = g.amax(dim=1, keepdim=True) == g.amin(dim=1, keepdim=True)
    adv = (g - mean) / (std + eps)
    adv = torch.where(constant, torch.zeros_like(adv), adv)
    return adv.reshape(n).to(out_dtype)


def advantages_by_group(
    rewards: Tensor, group_ids: Tensor, eps: float = 1e-8, *, unbiased: bool = False
) -> Tensor:
    """:func:`group_advantages` for samples in any order, grouped by ``group_ids``.

    The samples of a multi-process step arrive gathered from every process, each with the
    id of its (reference, prompt) group; every group is standardised on its own members,
    exactly as :func:`group_advantages` does for consecutive groups::

        A_i = (r_i - mean_{g(i)}) / (std_{g(i)} + eps)   # population std (or unbiased)

    All groups must have the same size (the trainer's G). Returns advantages in the order
    of ``rewards``.
    """
    r = torch.as_tensor(rewards)
    ids = torch.as_tensor(group_ids)
    if r.ndim != 1 or ids.shape != r.shape:
        raise ValueError(
            f"rewards {tuple(r.shape)} and group_ids {tuple(ids.shape)} must be 1-D, same length"
        )
    if r.numel() == 0:
        raise ValueError("rewards is empty: need at least one group of rewards")
    order = torch.argsort(ids, stable=True)
    _, counts = torch.unique(ids, return_counts=True)
    if not bool((counts == counts[0]).all()):
        raise ValueError(f"groups have different sizes {sorted(set(counts.tolist()))}")
    adv_sorted = group_advantages(r[order], int(counts[0]), eps, unbiased=unbiased)
    out = torch.empty_like(adv_sorted)
    out[order] = adv_sorted
    return out
