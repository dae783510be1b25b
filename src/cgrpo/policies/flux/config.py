"""Settings of the FLUX policy and the layout of the FLUX weights on disk.

Weights are only ever read from disk (``from_pretrained(..., local_files_only=True)``);
a missing or incomplete folder fails at construction with one line that says which
component, where, which files are expected and how to get them (see ``docs/gpu.md``):
:func:`_check_component` raises :class:`FluxWeightsError` with that line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cgrpo.config.core import option

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "FUSED_PROJECTIONS",
    "LORA_PRESETS",
    "UNO_LORA_TARGETS",
    "FluxConfig",
    "FluxWeightsError",
    "fuses_qkv",
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

#: UNO's LoRA (``uno/flux/modules/layers.py``: DoubleStreamBlockLoraProcessor and
#: SingleStreamBlockLoraProcessor) on diffusers' modules. Double blocks: one LoRA on the
#: fused qkv and one on the output projection of each stream (image: ``to_qkv``,
#: ``to_out.0``; text: ``to_added_qkv``, ``to_add_out``). Single blocks: one on the qkv
#: part of the input projection (``to_qkv``) and one on ``proj_out``, whose input is
#: ``cat(attention, MLP)`` as UNO's ``proj_lora``. ``to_qkv`` / ``to_added_qkv`` exist only
#: once the q/k/v projections are fused (:func:`~cgrpo.policies.flux.lora.inject_lora`
#: fuses them for these targets): a rank-r LoRA on the fused qkv shares one A among q, k
#: and v, which three rank-r LoRAs on to_q, to_k, to_v do not.
UNO_LORA_TARGETS: list[str] = [
    "attn.to_qkv",
    "attn.to_out.0",
    "attn.to_added_qkv",
    "attn.to_add_out",
    "proj_out",
]

#: ``flux.lora_preset``: its LoRA targets (None: ``flux.lora_targets`` as given).
LORA_PRESETS: dict[str, list[str] | None] = {
    "uno": UNO_LORA_TARGETS,
    "diffusers_all": DEFAULT_LORA_TARGETS,
    "custom": None,
}

#: the separate projections each fused one replaces (diffusers' ``fuse_projections``)
FUSED_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "to_qkv": ("to_q", "to_k", "to_v"),
    "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj"),
}


def fuses_qkv(targets: list[str]) -> bool:
    """Whether LoRA ``targets`` name a fused projection (``...to_qkv`` / ``...to_added_qkv``)."""
    return any(t.rsplit(".", 1)[-1] in FUSED_PROJECTIONS for t in targets)


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
    reference_preprocess: Literal["square", "kontext", "uno"] = option(
        "square",
        "how a reference is prepared for the model (cgrpo/policies/flux/reference.py): "
        "square (centre crop, resized to resolution), kontext (FluxKontextPipeline: the "
        "preferred ~1 MP Kontext resolution of its aspect ratio, Lanczos), uno (UNO: long "
        "side uno_ref_size, Lanczos, centre-cropped to multiples of 16); the shipped "
        "configs use their model's own",
    )
    uno_ref_size: int = option(
        -1, "uno: the reference's long side (-1: UNO's default, 512 for one, 320 for several)",
        unit="px",
    )  # fmt: skip
    guidance: float = option(3.5, "FLUX guidance-embedding value (distilled guidance)")
    resolution: int = option(512, "generated and reference image side", unit="px")
    lora_rank: int = option(512, "LoRA rank r (the paper: 512)")
    lora_alpha: float | None = option(
        None, "LoRA alpha; the update is scaled by alpha / r (null: alpha = r, scale 1)"
    )
    lora_preset: Literal["uno", "diffusers_all", "custom"] = option(
        "diffusers_all",
        "which layers get the LoRA: uno (UNO's and the paper's: fused qkv + output "
        "projection of each stream in the double blocks, fused qkv + proj_out in the single "
        "blocks, A initialised N(0, 1/r) as UNO; 1,867,776 x r parameters on FLUX.1-dev), "
        "diffusers_all (separate q/k/v, attention outputs and every MLP projection; 4,085,760 "
        "x r), custom (flux.lora_targets)",
    )
    lora_targets: list[str] = option(
        [],
        "lora_preset custom: the LoRA target modules, relative to every double and single "
        "transformer block (to_qkv / to_added_qkv fuse the q/k/v projections); empty with "
        "the other presets",
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
        self._check_lora_targets()
        if self.uno_ref_size != -1 and (self.uno_ref_size < 16 or self.uno_ref_size % 16):
            raise ValueError(
                f"flux.uno_ref_size must be -1 or a multiple of 16 >= 16, got {self.uno_ref_size}"
            )
        if not 1 <= self.max_sequence_length <= 512:
            raise ValueError("flux.max_sequence_length must be in [1, 512] (T5 limit in FLUX)")

    def _check_lora_targets(self) -> None:
        if self.lora_preset not in LORA_PRESETS:
            raise ValueError(
                f"flux.lora_preset must be one of {', '.join(LORA_PRESETS)}, "
                f"got {self.lora_preset!r}"
            )
        if self.lora_preset != "custom" and self.lora_targets:
            raise ValueError(
                f"flux.lora_targets is read only with flux.lora_preset=custom (it is "
                f"{self.lora_preset!r}): set flux.lora_preset=custom or leave lora_targets empty"
            )
        if self.lora_preset == "custom" and not self.lora_targets:
            raise ValueError("flux.lora_targets is empty: name at least one module to adapt")
        separate = {n for names in FUSED_PROJECTIONS.values() for n in names}
        if fuses_qkv(self.lora_targets) and any(
            t.rsplit(".", 1)[-1] in separate for t in self.lora_targets
        ):
            raise ValueError(
                "flux.lora_targets names fused (to_qkv/to_added_qkv) and separate "
                "(to_q/to_k/to_v/add_*_proj) projections: fusing removes the separate ones, "
                "pick one kind"
            )

    def check_files(self) -> None:
        """Every file the policy will read exists (each component folder of ``path``, the
        ``start_lora`` file), else one line naming it and the fix; reads no weights, so
        a run can check before anything loads."""
        root = Path(self.path) if self.path else None
        for name in _COMPONENTS:
            _check_component(root, name)
        if self.start_lora and not Path(self.start_lora).is_file():
            raise FluxWeightsError(
                f"flux.start_lora: LoRA file '{self.start_lora}' not found (UNO's is "
                "dit_lora.safetensors from bytedance-research/UNO, see docs/gpu.md); set "
                "flux.start_lora=null to train from the base model"
            )

    @property
    def lora_target_names(self) -> list[str]:
        """The LoRA targets in effect: the preset's, or ``lora_targets`` for ``custom``."""
        preset = LORA_PRESETS[self.lora_preset]
        return list(self.lora_targets if preset is None else preset)


class FluxWeightsError(FileNotFoundError):
    """A FLUX component's weights are missing or incomplete; the message says how to fix it."""


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
    """The folder of component ``name`` under ``root``, or one line of :class:`FluxWeightsError`."""
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
