"""On-disk cache of FLUX prompt embeddings (T5 sequence and CLIP pooled vector).

One safetensors file per prompt in ``FluxConfig.prompt_cache_dir``, named by
``sha256(max_sequence_length, prompt)``, holding ``prompt_embeds`` (L, D) and
``pooled_prompt_embeds`` (P,); the prompt itself is in the metadata. The key does not
name the text encoders: use one folder per text-encoder pair. A run whose prompts are
all cached never loads T5 at all (:class:`~cgrpo.policies.flux.policy.FluxPolicy` loads the
text encoders on the first miss).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cgrpo.io.atomic import atomic_write

__all__ = ["PromptCache"]


def _prompt_key(prompt: str, max_len: int) -> str:
    return hashlib.sha256(f"{max_len}\n{prompt}".encode()).hexdigest()[:32]


class PromptCache:
    """Prompt embeddings in ``folder`` (``None`` or empty: no cache, nothing is stored)."""

    def __init__(self, folder: str | Path | None, max_sequence_length: int) -> None:
        self.folder = Path(folder) if folder else None
        self.max_sequence_length = max_sequence_length

    def path(self, prompt: str) -> Path | None:
        """The cache file of ``prompt`` (``None`` without a cache folder)."""
        if self.folder is None:
            return None
        return self.folder / f"{_prompt_key(prompt, self.max_sequence_length)}.safetensors"

    def __contains__(self, prompt: str) -> bool:
        path = self.path(prompt)
        return path is not None and path.is_file()

    def load(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(prompt_embeds, pooled_prompt_embeds)`` of ``prompt``, or ``None`` if not cached."""
        from safetensors.torch import load_file

        path = self.path(prompt)
        if path is None or not path.is_file():
            return None
        t = load_file(str(path))
        return t["prompt_embeds"], t["pooled_prompt_embeds"]

    def save(self, prompt: str, seq: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store one prompt's embeddings (atomically); a no-op without a cache folder."""
        from safetensors.torch import save_file

        path = self.path(prompt)
        if path is None:
            return
        tensors = {"prompt_embeds": seq, "pooled_prompt_embeds": pooled}
        meta = {"prompt": prompt, "max_sequence_length": str(len(seq))}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
