"""Sharded parameters (torch FSDP2 ``DTensor``): a whole tensor gathered, the local part,
a whole tensor sharded again as another is. Anything not sharded passes through.

Used by the data-parallel layer (:class:`cgrpo.run.distributed.Dist`), the train state's
checkpoints and policies that copy their own weights (the embedded old policy)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["cpu_copy", "full_tensor", "local_tensor", "shard_like"]


def full_tensor(t: Any, keep: bool = True) -> Any:
    """The whole tensor of a sharded one, in CPU memory (a collective: call it on every
    process, tensor by tensor, so a device holds one gathered tensor at a time).
    ``keep=False`` drops the result (None): for processes that only take part in the
    gathering. Anything not sharded is returned as it is."""
    from torch.distributed.tensor import DTensor

    if not isinstance(t, DTensor):
        return t
    whole = t.detach().full_tensor()
    return whole.cpu() if keep else None


def cpu_copy(t: torch.Tensor, keep: bool = True) -> torch.Tensor | None:
    """A whole copy of ``t`` in CPU memory, of its own (a later change of ``t`` does not
    reach it): a sharded tensor gathered (:func:`full_tensor`, a collective), any other
    copied straight to CPU. Called tensor by tensor, a device holds at most one extra
    tensor at a time (a checkpoint never clones all weights on the device).
    ``keep=False``: None (only helps gather)."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        return full_tensor(t, keep)
    return t.detach().to("cpu", copy=True) if keep else None


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this process stores: its shard of a sharded tensor, else ``t``
    (no communication)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def shard_like(full: torch.Tensor, own: Any) -> torch.Tensor:
    """``full`` sharded as ``own`` is (each process keeps its part; no communication);
    when ``own`` is not sharded, ``full`` on ``own``'s device and in its dtype."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(own, DTensor):  # where the parameter lives (a GPU, say)
        return full.to(own.device, own.dtype) if torch.is_tensor(own) else full
    full = full.detach().to(own.device, own.dtype)
    return distribute_tensor(full, own.device_mesh, own.placements, src_data_rank=None)
