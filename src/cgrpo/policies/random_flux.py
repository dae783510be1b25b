"""Random-weight FLUX components built from configs, with nothing downloaded.

For tests, smoke runs of a new GPU set-up and cost benchmarks at real block sizes:

- ``tiny``: 1 double + 1 single block of width 32, a 2-level VAE with 4 latent channels
  (what the tests train on CPU in seconds);
- ``medium``: FLUX.1-dev's block width (24 heads x 128 = 3072, T5 width 4096, CLIP 768)
  and FLUX's VAE, with 2 double + 4 single blocks (1.3 B parameters);
- ``full``: FLUX.1-dev's transformer (19 double + 38 single blocks, 11.9 B parameters)
  and VAE.

The text encoders are always one-layer models of the widths the transformer expects, with
a word-level tokenizer over :data:`WORDS` (other words map to ``[UNK]``): their cost is
not what any of these presets measure (the paper's runs precompute prompt embeddings).
Weights are random (``seed``), so images are noise; shapes, memory and time are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["PRESETS", "WORDS", "random_flux", "save_random_flux", "word_tokenizer"]

WORDS = (
    "a an the dog cat backpack can red purple shiny wet in on of with top snow jungle beach "
    "street background city mountain house wearing hat"
).split()

_FLUX_DEV = dict(
    patch_size=1,
    in_channels=64,  # 16 latent channels x 2x2 packing
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
_FLUX_VAE = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
)
_TINY_VAE = dict(
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
)

#: transformer and VAE settings of each preset (diffusers constructor arguments)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "transformer": dict(
            patch_size=1,
            in_channels=16,  # 4 latent channels x 2x2 packing
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
        "vae": _TINY_VAE,
    },
    "medium": {
        "transformer": {**_FLUX_DEV, "num_layers": 2, "num_single_layers": 4},
        "vae": _FLUX_VAE,
    },
    "full": {
        "transformer": {**_FLUX_DEV, "num_layers": 19, "num_single_layers": 38},
        "vae": _FLUX_VAE,
    },
}


def word_tokenizer(max_len: int) -> Any:
    """A fast word-level tokenizer over :data:`WORDS` (pad 0, unk 1, eos 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token="[EOS]",
        model_max_length=max_len,
    )


def random_flux(
    preset: str = "tiny",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Components for :class:`~cgrpo.policies.flux.policy.FluxPolicy` (its keyword arguments
    ``transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2``), created
    directly in ``dtype`` on ``device`` (the full transformer is 23.8 GB in bf16)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if preset not in PRESETS:
        raise ValueError(f"unknown FLUX preset '{preset}': choose one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    t_cfg = spec["transformer"]
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**t_cfg)
            vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                scaling_factor=0.3611,
                shift_factor=0.1159,
                use_quant_conv=False,
                use_post_quant_conv=False,
                **spec["vae"],
            )
            vocab = len(WORDS) + 3
            width = t_cfg["pooled_projection_dim"]
            clip = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=vocab,
                    hidden_size=width,
                    intermediate_size=37,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    max_position_embeddings=16,
                    projection_dim=width,
                )
            )
            t5 = T5EncoderModel(
                T5Config(
                    vocab_size=vocab,
                    d_model=t_cfg["joint_attention_dim"],
                    d_kv=8,
                    d_ff=37,
                    num_layers=1,
                    num_heads=2,
                    relative_attention_num_buckets=8,
                )
            )
    finally:
        torch.set_default_dtype(previous)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": clip,
        "text_encoder_2": t5,
        "tokenizer": word_tokenizer(16),
        "tokenizer_2": word_tokenizer(512),
    }


def save_random_flux(root: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write :func:`random_flux` as a model folder in diffusers layout (what ``flux.path``
    expects); returns ``root``."""
    root = Path(root)
    for name, module in random_flux(preset, seed=seed).items():
        module.save_pretrained(root / name)
    return root
