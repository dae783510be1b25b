"""Image helpers of the real-photo reward backends (file loading lives in
:mod:`cgrpo.io.images`).

- :func:`check_batch`: validate the ``(images, prompts, references)`` triple of a reward call.
- :func:`normalize`: the mean/std step of the usual image processors, on batched tensors.
- :class:`EmbeddingCache`: a bounded LRU cache of per-image (or per-text) embeddings keyed by
  content, used to encode each unique reference image once; :func:`image_key` its key.
- :func:`resolve_device`: a reward's device option as a ``torch.device``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

import torch

from cgrpo.io.devices import check_device
from cgrpo.io.images import check_images

if TYPE_CHECKING:
    pass

__all__ = ["EmbeddingCache", "check_batch", "image_key", "normalize", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    return torch.device(check_device(device, "a reward's device option"))


# ----------------------------------------------------------------------------- files


# ----------------------------------------------------------------------------- validation


def check_batch(
    images: object, prompts: object, references: object | None, *, need_references: bool = True
) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """Validate a reward call; returns float32 images, the prompt list and the references.

    ``references`` may be ``None`` only when ``need_references`` is false (CLIP-T, HPS-v3).
    """
    imgs = check_images(images, "images")
    b = imgs.shape[0]
    refs: torch.Tensor | None = None
    if references is not None or need_references:
        refs = check_images(references, "references")
        if refs.shape[0] != b:
            raise ValueError(
                f"references must have shape ({b}, 3, H', W') to match images, "
                f"got {tuple(refs.shape)}"
            )
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of {b} strings, got {type(prompts)!r}")
    if len(prompts) != b:
        raise ValueError(
            f"prompts must be a list of {b} strings (one per image), got {len(prompts)}"
        )
    return imgs, list(prompts), refs


# ----------------------------------------------------------------------------- transforms


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of (N, 3, H, W)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


# ----------------------------------------------------------------------------- cache


def image_key(x: torch.Tensor) -> str:
    """Content key of one image tensor: shape plus a BLAKE2b digest of its float32 bytes."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return f"{tuple(arr.shape)}:{hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()}"


class EmbeddingCache:
    """Bounded LRU cache ``key -> embedding`` (embeddings kept on the encoder's device).

    :meth:`get_many` encodes only the keys it has not seen, in one batched call, and returns
    the embeddings of all keys in order; ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, max_items: int = 1024) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every embedding."""
        self._store.clear()

    def get_many(
        self,
        keys: Sequence[Hashable],
        encode: Callable[[list[int]], torch.Tensor],
    ) -> torch.Tensor:
        """Embeddings (len(keys), D) for ``keys``.

        ``encode(positions)`` must return the embeddings (len(positions), D) of the items at
        those positions of ``keys``; it is called once, with the first position of each unique
        key not in the cache, or not at all when every key is cached.
        """
        first: dict[Hashable, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [i for k, i in first.items() if k not in self._store]
        self.hits += len(first) - len(todo)
        self.misses += len(todo)
        fresh: dict[Hashable, torch.Tensor] = {}
        if todo:
            emb = encode(todo)
            for j, i in enumerate(todo):
                fresh[keys[i]] = emb[j]
        for k in first:
            if k in self._store:
                self._store.move_to_end(k)
        out = torch.stack([fresh[k] if k in fresh else self._store[k] for k in keys])
        for k, v in fresh.items():
            self._store[k] = v
            if len(self._store) > self.max_items:
                self._store.popitem(last=False)
        return out
