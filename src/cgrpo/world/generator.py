"""The embedded generator: a tiny in-context flow-matching transformer.

It takes its reference the way FLUX.1 Kontext and UNO do: the reference image is
patchified with the same patch embedding as the noisy image and appended to the
token sequence (with a "reference" type embedding instead of a shifted position
id), and text tokens join the same sequence; one stack of single-stream joint
attention blocks (FLUX's "single blocks", DiT adaLN-Zero modulation by the noise
level) processes them all. A small convolutional head refines the image tokens'
output at full resolution, so that shapes and stripes stay crisp at 32 px.

Convention (shared with :mod:`cgrpo.sampling.sde`): ``x_sigma = (1 - sigma) * x0 + sigma * noise``
and the model predicts the velocity ``v = noise - x0``. Images live in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cgrpo.config.core import option
from cgrpo.config.errors import quoted
from cgrpo.world import scene

PAD = "<pad>"


def vocabulary() -> list[str]:
    """Every word of the embedded prompt grammar, index 0 = padding."""
    words = ["a", "an", "small", "large", "in", "the", "on", "background", "center"]
    words += ["top", "bottom", "left", "right"]
    words += list(scene.SHAPES) + list(scene.COLOURS) + list(scene.BACKGROUNDS)
    out = [PAD]
    for w in words:
        if w not in out:
            out.append(w)
    return out


class Tokenizer:
    """Word-level tokenizer of the embedded grammar (the world's "T5")."""

    def __init__(self, max_length: int = 14) -> None:
        self.vocab = vocabulary()
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for row, text in enumerate(prompts):
            words = text.lower().split()
            if len(words) > self.max_length:
                raise ValueError(
                    f"prompt {quoted(text)} has {len(words)} words; the embedded tokenizer takes "
                    f"at most {self.max_length}"
                )
            for col, w in enumerate(words):
                if w not in self.index:
                    raise ValueError(
                        f"prompt {quoted(text)}: word {quoted(w)} is not in the embedded "
                        "vocabulary "
                        f"({len(self.vocab) - 1} words; see cgrpo.world.scene for the grammar)"
                    )
                ids[row, col] = self.index[w]
        return ids


@dataclass
class GeneratorConfig:
    """Architecture of the tiny generator (stored beside its weights)."""

    image_size: int = option(scene.IMAGE_SIZE, "image side", unit="px")
    channels: int = option(3, "image channels")
    patch: int = option(4, "patch side of the image and reference tokens", unit="px")
    dim: int = option(96, "transformer width")
    depth: int = option(6, "number of joint-attention blocks")
    heads: int = option(4, "attention heads")
    mlp_ratio: float = option(2.5, "MLP hidden width / dim")
    head_channels: int = option(32, "channels of the full-resolution conv head")
    max_text: int = option(14, "prompt length", unit="tokens")

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(sigma: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``scale * sigma`` (as FLUX embeds its timestep)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device) / half)
    args = scale * sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class JointBlock(nn.Module):
    """Single-stream joint-attention block with adaLN-Zero modulation."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        s1, sc1, g1, s2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        h = _modulate(self.norm1(x), s1, sc1)
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + g1[:, None] * self.proj(a)
        h = _modulate(self.norm2(x), s2, sc2)
        return x + g2[:, None] * self.mlp(h)


class TinyKontext(nn.Module):
    """velocity = f(x_sigma, sigma, prompt tokens, reference image)."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        cfg = config or GeneratorConfig()
        self.config = cfg
        p, c, d = cfg.patch, cfg.channels, cfg.dim
        grid = cfg.image_size // p
        self.grid = grid
        self.patch_embed = nn.Linear(c * p * p, d)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, d) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(3, d) * 0.02)  # text, image, reference
        self.word_embed = nn.Embedding(len(vocabulary()), d)
        self.text_pos = nn.Parameter(torch.randn(1, cfg.max_text, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.text_pool = nn.Linear(d, d)
        self.blocks = nn.ModuleList(
            JointBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.ada_out.weight)
        nn.init.zeros_(self.ada_out.bias)
        hc = cfg.head_channels
        self.unpatch = nn.Linear(d, p * p * hc)
        self.head = nn.Sequential(
            nn.Conv2d(hc + c, hc, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hc, hc, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hc, c, 3, padding=1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def _patchify(self, img: torch.Tensor) -> torch.Tensor:
        b, c, h, w = img.shape
        p = self.config.patch
        x = img.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def _unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        p, g, hc = self.config.patch, self.grid, self.config.head_channels
        x = tokens.reshape(b, g, g, hc, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, hc, g * p, g * p)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        text_ids: torch.Tensor,
        *,
        reference: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity for noisy images ``x`` (B,3,H,W) at noise level ``sigma`` (B,)."""
        b = x.shape[0]
        if sigma.dim() == 0:
            sigma = sigma.expand(b)
        text = (
            self.word_embed(text_ids) + self.text_pos[:, : text_ids.shape[1]] + self.type_embed[0]
        )
        img = self.patch_embed(self._patchify(x)) + self.pos + self.type_embed[1]
        ref = self.patch_embed(self._patchify(reference)) + self.pos + self.type_embed[2]
        mask = (text_ids != 0).unsqueeze(-1).to(text.dtype)
        pooled = (text * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        c = self.time_mlp(timestep_embedding(sigma, self.config.dim).to(x.dtype)) + self.text_pool(
            pooled
        )
        n_text, n_img = text.shape[1], img.shape[1]
        h = torch.cat([text, img, ref], dim=1)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        h = _modulate(self.norm_out(h[:, n_text : n_text + n_img]), shift, scale)
        feats = self._unpatchify(self.unpatch(h))
        return self.head(torch.cat([feats, x], dim=1))
