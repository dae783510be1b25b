"""A write that failed because the disk (or the user's quota) is full, told in one line
with the space the write needed and the space that is free."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cgrpo.io.errors import ResourceError

__all__ = ["no_space_error", "tensor_bytes"]


def tensor_bytes(tree: Any) -> int:
    """The bytes of the tensors in ``tree`` (dicts, lists, tuples of tensors):
    ``sum(numel x element_size)``."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, Mapping):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def no_space_error(
    exc: BaseException, root: Path, *, step: int, tensors: Any, previous: Path | None
) -> ResourceError | None:
    """A :class:`ResourceError` saying how much space the checkpoint of ``step`` needed
    (:func:`tensor_bytes` of ``tensors``) and that ``previous`` is kept, when ``exc`` is a
    full disk or quota (ENOSPC, EDQUOT, or safetensors' "No space left"); None otherwise."""
    if getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and (
        "No space left" not in str(exc)
    ):
        return None
    need, free = tensor_bytes(tensors), shutil.disk_usage(root).free
    kept = f"the previous checkpoint ({previous.name}) is kept" if previous else "none was before"
    return ResourceError(
        f"checkpoint of step {step} not written: the disk under '{root}' is full (it needs "
        f"about {need / 1e9:.2f} GB, {free / 1e9:.2f} GB are free); {kept}. Free space there "
        "(or lower run.keep_last) and continue with cgrpo train --resume"
    )
