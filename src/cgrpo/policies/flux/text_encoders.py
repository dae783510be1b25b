"""The two FLUX text encoders, as ``FluxPipeline.encode_prompt`` runs them: CLIP-L gives
the pooled vector, T5-XXL the token sequence.

They are loaded lazily, on the first prompt that is not in ``flux.prompt_cache_dir``
(:mod:`cgrpo.policies.flux.prompt_cache`), so a run with precomputed prompt embeddings
never holds T5 in memory (their files are still checked up front, by the policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cgrpo.policies.flux.prompt_cache import PromptCache

__all__ = ["TEXT_MODULES", "TextEncoders"]

#: The text modules of a FLUX model folder (each a sub-folder of ``flux.path``).
TEXT_MODULES = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


class TextEncoders:
    """Prompts -> ``(T5 embeddings (B, L, D), CLIP pooled (B, P))``, cached per prompt.

    ``modules``: the text modules already built (the others are ``None``, loaded from
    ``folders`` on first use); ``device`` / ``dtype``: where and how they run."""

    #: Prompts per text-encoder call.
    batch_size: int = 8

    def __init__(
        self,
        modules: dict[str, Any],
        folders: dict[str, Path],
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_sequence_length: int,
        cache_dir: str | None,
    ) -> None:
        self.device, self.dtype = device, dtype
        self.max_sequence_length = max_sequence_length
        self.modules: dict[str, Any] = {name: modules.get(name) for name in TEXT_MODULES}
        self.folders = folders
        self.cache = PromptCache(cache_dir, max_sequence_length)
        for name in ("text_encoder", "text_encoder_2"):
            if self.modules[name] is not None:
                self.modules[name] = self._prepare(self.modules[name])

    def _prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device, self.dtype).requires_grad_(False).eval()

    def module(self, name: str) -> Any:
        """Text encoder / tokenizer ``name``, loaded from its folder on first use."""
        module = self.modules[name]
        if module is not None:
            return module
        folder = self.folders[name]
        if name.startswith("tokenizer"):
            from transformers import AutoTokenizer

            module = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            from transformers import CLIPTextModel, T5EncoderModel

            cls = CLIPTextModel if name == "text_encoder" else T5EncoderModel
            module = cls.from_pretrained(folder, dtype=self.dtype, local_files_only=True)
            module = self._prepare(module)
        self.modules[name] = module
        return module

    @torch.no_grad()
    def _run(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 sequence (B, L, D), CLIP pooled (B, P)) as FluxPipeline.encode_prompt does."""
        tok, tok2 = self.module("tokenizer"), self.module("tokenizer_2")
        clip, t5 = self.module("text_encoder"), self.module("text_encoder_2")
        clip_ids = tok(
            prompts,
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        pooled = clip(clip_ids, output_hidden_states=False).pooler_output
        t5_ids = tok2(
            prompts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        seq = t5(t5_ids, output_hidden_states=False)[0]
        return seq.to(self.dtype), pooled.to(self.dtype)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 embeddings (B, L, D), CLIP pooled (B, P)); each distinct prompt is encoded
        once and, with a cache folder, read from / written to its cache file."""
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        todo: list[str] = []
        for p in dict.fromkeys(prompts):
            cached = self.cache.load(p)
            if cached is not None:
                found[p] = cached
            else:
                todo.append(p)
        for lo in range(0, len(todo), self.batch_size):
            chunk = todo[lo : lo + self.batch_size]
            seq, pooled = self._run(chunk)
            for i, p in enumerate(chunk):
                found[p] = (seq[i].cpu(), pooled[i].cpu())
                self.cache.save(p, *found[p])
        seq = torch.stack([found[p][0] for p in prompts]).to(self.device, self.dtype)
        pooled = torch.stack([found[p][1] for p in prompts]).to(self.device, self.dtype)
        return seq, pooled

    def precompute(self, prompts: list[str]) -> int:
        """Fill the cache folder for ``prompts``; returns how many were newly encoded."""
        if self.cache.folder is None:
            raise ValueError("set flux.prompt_cache_dir to precompute prompt embeddings")
        todo = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        self.encode(todo)
        return len(todo)
