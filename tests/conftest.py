"""Shared fixtures: a tiny random generator and a fast training config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.config import load_config
from cgrpo.train_config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.world.generator import GeneratorConfig, TinyKontext
from cgrpo.world.pretrain import save_generator

TINY = GeneratorConfig(dim=32, depth=1, heads=2, mlp_ratio=2.0, head_channels=8)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors on a shared 2-core machine: one thread is faster and deterministic."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "tiny.safetensors"
    save_generator(TinyKontext(TINY), path)
    return path


def fast_config(out_dir: Path, weights: Path, *overrides: str) -> TrainConfig:
    """The embedded config shrunk to seconds: tiny model, 2 pairs x 4 samples, 3 steps."""
    base = [
        f"run.out_dir={out_dir}",
        f"model.weights={weights}",
        "run.steps=2",
        "run.threads=1",
        "run.image_every=1",
        "run.checkpoint_every=1",
        "data.prompts_per_step=2",
        "data.eval_prompts_per_subject=1",
        "grpo.group_size=4",
        "sampler.num_steps=3",
        "optim.lr=1e-3",
    ]
    return load_config(TrainConfig, EMBEDDED_CONFIG, [*base, *overrides])


# ----------------------------------------------------------------- tiny FLUX components

WORDS = (
    "a an the dog cat backpack can red purple shiny wet in on of with top snow jungle beach "
    "street background city mountain house wearing hat"
).split()
PROMPTS = ["a dog in the snow", "a red can on the beach"]


def _tokenizer(max_len: int):
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


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FLUX model folder in diffusers layout."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_flux")
    FluxTransformer2DModel(
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
    ).save_pretrained(root / "transformer")
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).save_pretrained(root / "vae")
    vocab = len(WORDS) + 3
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            projection_dim=32,
        )
    ).save_pretrained(root / "text_encoder")
    T5EncoderModel(
        T5Config(
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
        )
    ).save_pretrained(root / "text_encoder_2")
    _tokenizer(16).save_pretrained(root / "tokenizer")
    _tokenizer(512).save_pretrained(root / "tokenizer_2")
    return root


class Brightness:
    """Toy reward on any image: mean brightness (or red minus blue), for trainer tests."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        if self.name == "bright":
            return images.mean(dim=(1, 2, 3))
        return images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2))


def flux_train_config(flux_dir: Path, tmp_path: Path, *overrides: str) -> TrainConfig:
    """A train config on the tiny FLUX model: two plain-colour references with PROMPTS as a
    JSONL pairs file, 16 px, LoRA rank 4, 2 pairs x 3 samples x 4 steps."""
    import json

    from PIL import Image

    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (24, 20), colour).save(tmp_path / f"ref{i}.png")
    pairs = tmp_path / "pairs.jsonl"
    rows = (json.dumps({"reference": f"ref{i}.png", "prompt": p}) for i, p in enumerate(PROMPTS))
    pairs.write_text("\n".join(rows))
    base = [
        "model.kind=flux", f"flux.path={flux_dir}", "flux.dtype=float32",
        "flux.resolution=16", "flux.lora_rank=4", "flux.max_sequence_length=8",
        "data.kind=jsonl", f"data.path={pairs}", "data.prompts_per_step=2",
        "grpo.group_size=3", "sampler.num_steps=4", "optim.lr=1e-2",
        f"run.out_dir={tmp_path / 'run'}", "run.threads=1",
    ]  # fmt: skip
    return load_config(TrainConfig, None, [*base, *overrides])
