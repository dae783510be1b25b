"""FLUX-family subject-driven policies (FLUX.1 Kontext, UNO) behind the policy protocol.

Everything in this module is FLUX-specific: a diffusers ``FluxTransformer2DModel`` (the
flow transformer), the FLUX ``AutoencoderKL`` (16 latent channels, 8x downsampling), the
two FLUX text encoders (CLIP-L for the pooled vector, T5-XXL for the token sequence) and a
peft LoRA on the transformer, which is all GRPO trains.

Latents and tokens
    A sample's latent is the *packed* FLUX latent: the VAE latent ``(C, h, w)`` cut into
    2x2 patches, i.e. ``(h/2 * w/2, 4C)`` tokens (``(1024, 64)`` at 512 px). The rollout,
    the SDE and the log-probs all work on these packed tokens; :meth:`FluxPolicy.decode`
    unpacks, unscales (``z / scaling_factor + shift_factor``) and VAE-decodes to [0, 1].

Reference in context
    The reference image is VAE-encoded (``(z - shift_factor) * scaling_factor``, the
    posterior mode), packed the same way and concatenated after the image tokens:
    ``hidden = [x tokens ; reference tokens]``. The transformer predicts all of them;
    :meth:`FluxPolicy.velocity` returns only the x tokens' prediction. The reference
    tokens get their own rotary position ids (``FluxConfig.position_scheme``):

    * ``kontext`` (FLUX.1 Kontext, as diffusers' ``FluxKontextPipeline``): same spatial
      ids as a target-sized grid, first id component 1 instead of 0;
    * ``uno`` (UNO's "UnoPE", FLUX.1-dev + the UNO LoRA): first component 0, spatial ids
      shifted diagonally past the target, i.e. row ids offset by the target's height and
      column ids by its width, both in latent-patch units (64 at 512 px).

    Text tokens have ids 0 (as in every FLUX pipeline).

Sign conventions (checked against diffusers' ``FluxPipeline`` and
``FlowMatchEulerDiscreteScheduler``): the scheduler noises ``x_s = (1 - s) x0 + s noise``
and steps ``x_next = x + (s_next - s) * model_output``; the pipeline passes the timestep
``t = 1000 s`` divided by 1000, i.e. ``s`` itself, and the transformer multiplies it by
1000 internally. So calling the transformer with ``timestep = sigma`` returns exactly the
velocity ``v = noise - x0`` of :mod:`cgrpo.sde`, no sign flip or rescale. The guidance
embedding (FLUX.1-dev / Kontext are guidance-distilled) gets ``FluxConfig.guidance``
(3.5, the pipelines' default), again un-multiplied (the transformer does the x1000).

Reference policy
    :meth:`FluxPolicy.reference_velocity` is the same forward with the LoRA disabled (the
    starting model, i.e. the base plus any merged ``start_lora``), under ``no_grad``; no
    second copy of the 12B transformer is kept.

Weights are only ever read from disk (``from_pretrained(..., local_files_only=True)``);
a missing or incomplete folder fails at construction with one line that says which
component, where, which files are expected and how to get them (see ``docs/gpu.md``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from cgrpo.config import option
from cgrpo.policies.base import Condition

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "FluxConfig",
    "FluxPolicy",
    "FluxWeightsError",
    "load_lora",
    "pack_latents",
    "position_ids",
    "save_lora",
    "unpack_latents",
]

#: LoRA targets, relative to each transformer block: attention q/k/v/out (image and text
#: streams of the double blocks, the shared attention of the single blocks) and the MLP
#: projections. Single blocks have no ``attn.to_out``/``add_*`` layers; names that a block
#: lacks are simply not matched there.
DEFAULT_LORA_TARGETS: list[str] = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
    "proj_mlp",
    "proj_out",
]

_ADAPTER = "default"
_LORA_PREFIX = "transformer."  # diffusers' key prefix for transformer LoRA weights


@dataclass
class FluxConfig:
    """Settings of the FLUX policy (section ``flux`` of the training config)."""

    path: str | None = option(
        None,
        "FLUX model folder in diffusers layout (transformer/, vae/, text_encoder/, "
        "text_encoder_2/, tokenizer/, tokenizer_2/): FLUX.1-dev for uno, FLUX.1-Kontext-dev "
        "for kontext",
    )
    position_scheme: Literal["kontext", "uno"] = option(
        "uno",
        "position ids of the reference tokens: kontext (first id 1) or uno (spatial ids "
        "shifted past the target)",
    )
    guidance: float = option(3.5, "FLUX guidance-embedding value (distilled guidance)")
    resolution: int = option(512, "generated and reference image side", unit="px")
    lora_rank: int = option(512, "LoRA rank r (the paper: 512)")
    lora_alpha: float | None = option(
        None, "LoRA alpha; the update is scaled by alpha / r (null: alpha = r, scale 1)"
    )
    lora_targets: list[str] = option(
        DEFAULT_LORA_TARGETS,
        "LoRA target modules, relative to every double and single transformer block",
    )
    start_lora: str | None = option(
        None,
        "LoRA safetensors merged into the base weights before training (e.g. UNO's "
        "dit_lora.safetensors; diffusers, XLabs and kohya formats)",
    )
    dtype: Literal["bfloat16", "float32"] = option(
        "bfloat16", "dtype of the frozen weights (LoRA weights are always float32)"
    )
    gradient_checkpointing: bool = option(
        True, "recompute transformer block activations in the backward pass"
    )
    prompt_cache_dir: str | None = option(
        None,
        "folder of cached T5/CLIP prompt embeddings, one safetensors per prompt keyed by "
        "sha256(max_sequence_length, prompt): use one folder per text-encoder pair",
    )
    max_sequence_length: int = option(512, "T5 tokens per prompt", unit="tokens")

    def __post_init__(self) -> None:
        if self.resolution % 16:
            raise ValueError(f"flux.resolution must be a multiple of 16, got {self.resolution}")
        if self.lora_rank < 1:
            raise ValueError(f"flux.lora_rank must be >= 1, got {self.lora_rank}")
        if not self.lora_targets:
            raise ValueError("flux.lora_targets is empty: name at least one module to adapt")
        if not 1 <= self.max_sequence_length <= 512:
            raise ValueError("flux.max_sequence_length must be in [1, 512] (T5 limit in FLUX)")


class FluxWeightsError(FileNotFoundError):
    """A FLUX component's weights are missing or incomplete; the message says how to fix it."""


# ----------------------------------------------------------------------------- pure helpers


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


def _grid_ids(rows: int, cols: int, first: float, row_offset: int, col_offset: int) -> torch.Tensor:
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = first
    ids[..., 1] = torch.arange(rows)[:, None] + row_offset
    ids[..., 2] = torch.arange(cols)[None, :] + col_offset
    return ids.reshape(rows * cols, 3)


def position_ids(
    scheme: str, rows: int, cols: int, ref_rows: int, ref_cols: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary ids ``(image ids (rows*cols, 3), reference ids (ref_rows*ref_cols, 3))``.

    ``rows``/``cols`` are the target's size in packed tokens (latent patches), ``ref_*``
    the reference's. The target always gets ``(0, i, j)``. The reference gets
    ``(1, i, j)`` under ``kontext`` and ``(0, i + rows, j + cols)`` under ``uno``.
    """
    img = _grid_ids(rows, cols, 0.0, 0, 0)
    if scheme == "kontext":
        ref = _grid_ids(ref_rows, ref_cols, 1.0, 0, 0)
    elif scheme == "uno":
        ref = _grid_ids(ref_rows, ref_cols, 0.0, rows, cols)
    else:
        raise ValueError(f"unknown position scheme {scheme!r}; valid: kontext, uno")
    return img, ref


def _target_regex(targets: list[str]) -> str:
    """peft target regex: the given names inside every (single) transformer block only.

    A plain name list would also match the model's final ``proj_out``, which is not in a
    block; the regex keeps the LoRA on the blocks.
    """
    names = "|".join(re.escape(t) for t in targets)
    return rf"(transformer_blocks|single_transformer_blocks)\.\d+\.({names})"


def save_lora(path: str | Path, state: dict[str, torch.Tensor], rank: int, alpha: float) -> Path:
    """Write LoRA weights (peft keys without adapter name) as diffusers-style safetensors.

    Keys get the ``transformer.`` prefix, so the file also loads with diffusers'
    ``FluxPipeline.load_lora_weights``; rank and alpha go into the metadata.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {_LORA_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": "pt", "lora_rank": str(rank), "lora_alpha": str(float(alpha))}
    save_file(tensors, str(path), metadata=meta)
    return path


def load_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a LoRA safetensors: (state without the ``transformer.`` prefix, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FluxWeightsError(f"LoRA file not found: '{path}'")
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            key = k[len(_LORA_PREFIX) :] if k.startswith(_LORA_PREFIX) else k
            state[key] = f.get_tensor(k)
    return state, meta


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _is_file(path: Path | None) -> bool:
    return path is not None and path.is_file()


def _prompt_key(prompt: str, max_len: int) -> str:
    return hashlib.sha256(f"{max_len}\n{prompt}".encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- loading

_COMPONENTS: dict[str, tuple[tuple[str, ...], str]] = {
    # folder: (files that must exist (glob patterns), what it is)
    "transformer": (("config.json", "diffusion_pytorch_model*.safetensors"), "FLUX transformer"),
    "vae": (("config.json", "diffusion_pytorch_model*.safetensors"), "FLUX VAE"),
    "text_encoder": (("config.json", "model*.safetensors"), "CLIP-L text encoder"),
    "text_encoder_2": (("config.json", "model*.safetensors"), "T5-XXL text encoder"),
    "tokenizer": (("tokenizer_config.json",), "CLIP tokenizer"),
    "tokenizer_2": (("tokenizer_config.json",), "T5 tokenizer"),
}


def _check_component(root: Path | None, name: str) -> Path:
    patterns, what = _COMPONENTS[name]
    hint = (
        "download the diffusers-layout repo (black-forest-labs/FLUX.1-dev for uno, "
        "black-forest-labs/FLUX.1-Kontext-dev for kontext) to flux.path, see docs/gpu.md"
    )
    if root is None:
        raise FluxWeightsError(f"{what}: flux.path is not set; {hint}")
    folder = root / name
    missing = [p for p in patterns if not any(folder.glob(p))]
    if missing:
        raise FluxWeightsError(
            f"{what} weights missing: '{folder}' needs {' and '.join(patterns)} "
            f"(missing: {', '.join(missing)}); {hint}"
        )
    return folder


class FluxPolicy:
    """:class:`~cgrpo.policies.base.Policy` over a FLUX transformer with a peft LoRA.

    Build it from ``config.path`` (``FluxPolicy(config, device)``), or hand in already
    built modules (tests, notebooks): any module given is used as is, the others are
    loaded from ``config.path``. ``transformer_device`` (default: ``device``) is where the
    transformer is placed at construction: ``"cpu"`` when FSDP will shard it onto the GPUs
    (:meth:`cgrpo.distributed.Dist.shard_policy` moves each shard to the process's device).
    The text encoders are loaded lazily, on the first prompt
    that is not in ``config.prompt_cache_dir``, so a run with precomputed prompt
    embeddings never holds T5 in memory (their files are still checked up front).
    """

    #: Images per VAE call in :meth:`encode_condition` / :meth:`decode` (bounds VAE memory).
    vae_batch_size: int = 4
    #: Prompts per text-encoder call.
    text_batch_size: int = 8

    def __init__(
        self,
        config: FluxConfig,
        device: str | torch.device = "cpu",
        *,
        transformer: torch.nn.Module | None = None,
        vae: torch.nn.Module | None = None,
        text_encoder: torch.nn.Module | None = None,
        text_encoder_2: torch.nn.Module | None = None,
        tokenizer: Any = None,
        tokenizer_2: Any = None,
        transformer_device: str | torch.device | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
        root = Path(config.path) if config.path else None
        given = {
            "transformer": transformer,
            "vae": vae,
            "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
        }
        folders = {n: _check_component(root, n) for n, m in given.items() if m is None}
        if transformer is None:
            from diffusers import FluxTransformer2DModel

            transformer = FluxTransformer2DModel.from_pretrained(
                folders["transformer"], torch_dtype=self.dtype, local_files_only=True
            )
        if vae is None:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(
                folders["vae"], torch_dtype=self.dtype, local_files_only=True
            )
        # FSDP builds the transformer in CPU memory and moves only shards to the GPU
        self.transformer = transformer.to(transformer_device or self.device, self.dtype)
        self.vae = vae.to(self.device, self.dtype).requires_grad_(False).eval()
        self._text_modules: dict[str, Any] = {
            "text_encoder": text_encoder,
            "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
        }
        self._text_folders = folders
        for name in ("text_encoder", "text_encoder_2"):
            if self._text_modules[name] is not None:
                self._text_modules[name] = self._prepare_text_encoder(self._text_modules[name])

        vc = self.vae.config
        self.scaling_factor = float(vc.scaling_factor)
        self.shift_factor = float(getattr(vc, "shift_factor", None) or 0.0)
        self.vae_scale = 2 ** (len(vc.block_out_channels) - 1)
        self.latent_channels = int(vc.latent_channels)
        latent_side = config.resolution // self.vae_scale
        if latent_side % 2:
            raise ValueError(
                f"resolution {config.resolution} px gives an odd latent side {latent_side} "
                f"(VAE downsamples {self.vae_scale}x): use a multiple of {2 * self.vae_scale}"
            )
        self.latent_hw = (latent_side, latent_side)
        self.tokens_hw = (latent_side // 2, latent_side // 2)
        expected_in = self.latent_channels * 4
        if int(self.transformer.config.in_channels) != expected_in:
            raise ValueError(
                f"transformer in_channels={self.transformer.config.in_channels} but the VAE "
                f"packs {self.latent_channels} latent channels into {expected_in}"
            )
        rows, cols = self.tokens_hw
        img_ids, ref_ids = position_ids(config.position_scheme, rows, cols, rows, cols)
        self.img_ids = torch.cat([img_ids, ref_ids]).to(self.device)

        self.transformer.requires_grad_(False)
        if config.start_lora:
            self.merge_lora(config.start_lora)
        self._add_lora()
        if config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()  # FLUX has no dropout: train mode changes nothing numerically

    # -- construction helpers ------------------------------------------------------------------

    def _prepare_text_encoder(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device, self.dtype).requires_grad_(False).eval()

    def _text(self, name: str) -> Any:
        """Text encoder / tokenizer ``name``, loaded from ``config.path`` on first use."""
        module = self._text_modules[name]
        if module is not None:
            return module
        folder = self._text_folders[name]
        if name.startswith("tokenizer"):
            from transformers import AutoTokenizer

            module = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            from transformers import CLIPTextModel, T5EncoderModel

            cls = CLIPTextModel if name == "text_encoder" else T5EncoderModel
            module = cls.from_pretrained(folder, dtype=self.dtype, local_files_only=True)
            module = self._prepare_text_encoder(module)
        self._text_modules[name] = module
        return module

    def _add_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        c = self.config
        alpha = float(c.lora_alpha) if c.lora_alpha is not None else float(c.lora_rank)
        self.lora_alpha = alpha
        lora_config = LoraConfig(
            r=c.lora_rank,
            lora_alpha=alpha,
            target_modules=_target_regex(c.lora_targets),
            init_lora_weights=True,  # A Kaiming-uniform, B zero: the adapter starts as identity
        )
        inject_adapter_in_model(lora_config, self.transformer, adapter_name=_ADAPTER)
        for name, p in self.transformer.named_parameters():
            is_lora = "lora_" in name
            if is_lora:
                p.data = p.data.float()  # fp32 master weights: bf16 would swallow lr 2e-5 steps
            p.requires_grad_(is_lora)
        if not self._lora_params:
            raise ValueError(
                f"flux.lora_targets {c.lora_targets} matched no module of the transformer"
            )

    @torch.no_grad()
    def merge_lora(self, path: str | Path) -> int:
        """Merge a LoRA file into the (frozen) base weights: ``W += alpha / r * B @ A``.

        Accepts this module's format (see :func:`save_lora`) and whatever diffusers'
        ``FluxLoraLoaderMixin.lora_state_dict`` converts (diffusers/peft, kohya, XLabs:
        UNO's ``dit_lora.safetensors`` uses XLabs-style ``processor.qkv_lora`` keys).
        Returns how many linear layers were changed. Must run before the trainable LoRA
        is injected (the constructor does so for ``start_lora``).
        """
        from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FluxWeightsError(f"flux.start_lora: LoRA file not found: '{path}'")
        raw = load_file(str(path))
        meta = _read_metadata(path)
        state, alphas = FluxLoraLoaderMixin.lora_state_dict(raw, return_alphas=True)
        alphas = {k: float(v) for k, v in (alphas or {}).items()}
        modules = dict(self.transformer.named_modules())
        leftover = [k for k in state if ".lora_A." not in k and ".lora_B." not in k]
        if leftover:
            raise ValueError(
                f"flux.start_lora '{path}': {len(leftover)} keys are not LoRA A/B weights "
                f"(e.g. '{leftover[0]}'): unsupported LoRA format"
            )
        merged = 0
        for key in [k for k in state if ".lora_A." in k]:
            mod_name = key.split(".lora_A.")[0]
            name = mod_name[len(_LORA_PREFIX) :] if mod_name.startswith(_LORA_PREFIX) else mod_name
            b_key = key.replace(".lora_A.", ".lora_B.")
            module = modules.get(name)
            if module is None or not isinstance(module, torch.nn.Linear) or b_key not in state:
                raise ValueError(
                    f"flux.start_lora '{path}': key '{key}' names no linear layer of the "
                    "transformer (or has no lora_B): not a FLUX transformer LoRA?"
                )
            a, b = state[key].float(), state[b_key].float()
            rank = a.shape[0]
            alpha = alphas.get(f"{mod_name}.alpha", alphas.get(f"{name}.alpha"))
            if alpha is None:
                alpha = float(meta.get("lora_alpha", rank))
            w = module.weight
            delta = (alpha / rank) * (b.to(w.device) @ a.to(w.device))
            if delta.shape[0] != w.shape[0] or delta.shape[1] > w.shape[1]:
                raise ValueError(
                    f"flux.start_lora '{path}': '{name}' LoRA is {tuple(delta.shape)}, the layer "
                    f"{tuple(w.shape)}: made for another model size?"
                )
            # XLabs/UNO single-block "proj_lora" acts on the attention output only, i.e. on
            # the first `dim` inputs of diffusers' fused proj_out(cat(attn, mlp)).
            cols = delta.shape[1]
            if cols < w.shape[1] and not name.endswith("proj_out"):
                raise ValueError(
                    f"flux.start_lora '{path}': '{name}' LoRA input size {cols} != {w.shape[1]}"
                )
            w[:, :cols] = (w[:, :cols].float() + delta).to(w.dtype)
            merged += 1
        if not merged:
            raise ValueError(f"flux.start_lora '{path}' holds no LoRA (lora_A/lora_B) weights")
        return merged

    @property
    def _lora_params(self) -> list[torch.nn.Parameter]:
        """The LoRA weights, looked up each time: FSDP replaces the parameter objects."""
        return [p for n, p in self.transformer.named_parameters() if "lora_" in n]

    def shard_modules(self) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
        """FSDP units: each double- and single-stream block, and the transformer (the rest:
        embedders, norm, projection)."""
        t = self.transformer
        return t, [*t.transformer_blocks, *t.single_transformer_blocks]

    # -- the protocol --------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.dtype == torch.bfloat16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def latent_shape(self) -> tuple[int, ...]:
        rows, cols = self.tokens_hw
        return (rows * cols, self.latent_channels * 4)

    @torch.no_grad()
    def encode_reference(self, references: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> packed, scaled reference latents (B, N, 4C).

        References are resized (bilinear, antialiased) to ``resolution`` x ``resolution``.
        """
        size = self.config.resolution
        refs = references.to(self.device, torch.float32)
        if refs.shape[-2:] != (size, size):
            refs = torch.nn.functional.interpolate(
                refs, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        out = []
        for lo in range(0, refs.shape[0], self.vae_batch_size):
            x = (refs[lo : lo + self.vae_batch_size] * 2 - 1).to(self.dtype)
            with self._autocast():
                z = self.vae.encode(x).latent_dist.mode()
            z = (z.float() - self.shift_factor) * self.scaling_factor
            out.append(pack_latents(z).to(self.dtype))
        return torch.cat(out)

    def _cache_path(self, prompt: str) -> Path | None:
        d = self.config.prompt_cache_dir
        if not d:
            return None
        return Path(d) / f"{_prompt_key(prompt, self.config.max_sequence_length)}.safetensors"

    @torch.no_grad()
    def _run_text_encoders(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 sequence (B, L, D), CLIP pooled (B, P)) as FluxPipeline.encode_prompt does."""
        tok, tok2 = self._text("tokenizer"), self._text("tokenizer_2")
        clip, t5 = self._text("text_encoder"), self._text("text_encoder_2")
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
            max_length=self.config.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        seq = t5(t5_ids, output_hidden_states=False)[0]
        return seq.to(self.dtype), pooled.to(self.dtype)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 embeddings (B, L, D), CLIP pooled (B, P)); each distinct prompt is encoded
        once and, with ``prompt_cache_dir``, read from / written to its cache file."""
        from safetensors.torch import load_file, save_file

        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        todo: list[str] = []
        for p in dict.fromkeys(prompts):
            path = self._cache_path(p)
            if path is not None and path.is_file():
                t = load_file(str(path))
                found[p] = (t["prompt_embeds"], t["pooled_prompt_embeds"])
            else:
                todo.append(p)
        for lo in range(0, len(todo), self.text_batch_size):
            chunk = todo[lo : lo + self.text_batch_size]
            seq, pooled = self._run_text_encoders(chunk)
            for i, p in enumerate(chunk):
                found[p] = (seq[i].cpu(), pooled[i].cpu())
                path = self._cache_path(p)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
                    save_file(
                        {"prompt_embeds": found[p][0], "pooled_prompt_embeds": found[p][1]},
                        str(tmp),
                        metadata={"prompt": p, "max_sequence_length": str(len(found[p][0]))},
                    )
                    tmp.replace(path)
        seq = torch.stack([found[p][0] for p in prompts]).to(self.device, self.dtype)
        pooled = torch.stack([found[p][1] for p in prompts]).to(self.device, self.dtype)
        return seq, pooled

    def precompute_prompts(self, prompts: list[str]) -> int:
        """Fill ``prompt_cache_dir`` for ``prompts`` (e.g. a whole dataset before training);
        returns how many were newly encoded."""
        if not self.config.prompt_cache_dir:
            raise ValueError("set flux.prompt_cache_dir to precompute prompt embeddings")
        todo = [p for p in dict.fromkeys(prompts) if not _is_file(self._cache_path(p))]
        self.encode_prompts(todo)
        return len(todo)

    def encode_condition(self, references: torch.Tensor, prompts: list[str]) -> Condition:
        if references.shape[0] != len(prompts):
            raise ValueError(
                f"{references.shape[0]} references but {len(prompts)} prompts: give one each"
            )
        seq, pooled = self.encode_prompts(list(prompts))
        return Condition(
            prompt_embeds=seq,
            pooled_prompt_embeds=pooled,
            reference_tokens=self.encode_reference(references),
        )

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        n = x.shape[1]
        b = x.shape[0]
        hidden = torch.cat([x.to(self.dtype), condition["reference_tokens"].to(self.dtype)], dim=1)
        text = condition["prompt_embeds"].to(self.dtype)
        txt_ids = torch.zeros(text.shape[1], 3, device=self.device)
        guidance = None
        if getattr(self.transformer.config, "guidance_embeds", False):
            guidance = torch.full((b,), float(self.config.guidance), device=self.device)
        with self._autocast():
            out = self.transformer(
                hidden_states=hidden,
                encoder_hidden_states=text,
                pooled_projections=condition["pooled_prompt_embeds"].to(self.dtype),
                timestep=sigma.to(self.device, torch.float32),
                img_ids=self.img_ids,
                txt_ids=txt_ids,
                guidance=guidance,
                return_dict=False,
            )[0]
        return out[:, :n].to(x.dtype)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        return self._forward(x, sigma, condition)

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """The starting model: the LoRA layers bypassed (their weights untouched)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.transformer.modules() if isinstance(m, BaseTunerLayer)]
        flags = [p.requires_grad for p in self._lora_params]
        for m in layers:
            m.enable_adapters(False)
        try:
            yield
        finally:
            for m in layers:
                m.enable_adapters(True)
            for p, f in zip(self._lora_params, flags, strict=True):
                p.requires_grad_(f)

    def reference_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        with torch.no_grad(), self.adapter_disabled():
            return self._forward(x, sigma, condition)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        h, w = self.latent_hw
        out = []
        for lo in range(0, latents.shape[0], self.vae_batch_size):
            z = unpack_latents(latents[lo : lo + self.vae_batch_size].float(), h, w)
            z = z / self.scaling_factor + self.shift_factor
            with self._autocast():
                img = self.vae.decode(z.to(self.device, self.dtype)).sample
            out.append(((img.float() + 1) / 2).clamp(0, 1))
        return torch.cat(out)

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(self._lora_params)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.transformer, adapter_name=_ADAPTER)
        return {k: v.detach().clone() for k, v in state.items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        own = self.trainable_state_dict()
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(own) - set(state))
        if unknown or missing:
            raise ValueError(
                f"LoRA state does not fit this policy (rank/targets differ?): "
                f"{len(missing)} missing keys (e.g. {missing[:2]}), "
                f"{len(unknown)} unknown keys (e.g. {unknown[:2]})"
            )
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise ValueError(
                    f"LoRA key '{k}' has shape {tuple(v.shape)}, expected "
                    f"{tuple(own[k].shape)} (different lora_rank?)"
                )
        set_peft_model_state_dict(self.transformer, state, adapter_name=_ADAPTER)

    def save_lora(self, path: str | Path) -> Path:
        """The trained LoRA as safetensors (see :func:`save_lora`)."""
        return save_lora(path, self.trainable_state_dict(), self.config.lora_rank, self.lora_alpha)

    def load_lora(self, path: str | Path) -> None:
        """Load a LoRA written by :meth:`save_lora` into the trainable adapter."""
        state, _ = load_lora(path)
        self.load_trainable_state_dict(state)

    def parameter_counts(self) -> dict[str, int]:
        """Frozen transformer parameters, LoRA parameters and adapted layers."""
        total = sum(p.numel() for p in self.transformer.parameters())
        lora = sum(p.numel() for p in self._lora_params)
        return {"frozen": total - lora, "lora": lora, "lora_layers": len(self._lora_params) // 2}
