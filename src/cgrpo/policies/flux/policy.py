"""The FLUX policy: :class:`FluxPolicy`, the policy protocol over a FLUX transformer + LoRA.

Latents
    Packed FLUX latent tokens (:mod:`cgrpo.policies.flux.latents`); :meth:`FluxPolicy.decode`
    unpacks, unscales (``z / scaling_factor + shift_factor``) and VAE-decodes to [0, 1].

Reference in context
    The reference image is VAE-encoded (``(z - shift_factor) * scaling_factor``, the
    posterior mode), packed the same way and concatenated after the image tokens:
    ``hidden = [x tokens ; reference tokens]``. The transformer predicts all of them;
    :meth:`FluxPolicy.velocity` returns only the x tokens' prediction. The reference
    tokens get their own rotary position ids (``FluxConfig.position_scheme``, see
    :func:`~cgrpo.policies.flux.latents.position_ids`). Each reference is first prepared
    as its model's pipeline does (``FluxConfig.reference_preprocess``, see
    :mod:`cgrpo.policies.flux.reference`), so it need not have the target's size, and a
    pair may have several (UNO); the condition's ``reference_shapes`` records each
    reference's token grid.

Sign conventions (checked against diffusers' ``FluxPipeline`` and
``FlowMatchEulerDiscreteScheduler``): the scheduler noises ``x_s = (1 - s) x0 + s noise``
and steps ``x_next = x + (s_next - s) * model_output``; the pipeline passes the timestep
``t = 1000 s`` divided by 1000, i.e. ``s`` itself, and the transformer multiplies it by
1000 internally. So calling the transformer with ``timestep = sigma`` returns exactly the
velocity ``v = noise - x0`` of :mod:`cgrpo.sampling.sde`, no sign flip or rescale. The guidance
embedding (FLUX.1-dev / Kontext are guidance-distilled) gets ``FluxConfig.guidance``
(3.5, the pipelines' default), again un-multiplied (the transformer does the x1000);
:meth:`FluxPolicy.guidance_set_to` sets another value for a while (``cgrpo eval guidance=``).

Reference policy
    :meth:`FluxPolicy.reference_velocity` is the same forward with the LoRA disabled (the
    starting model, i.e. the base plus any merged ``start_lora``), under ``no_grad``; no
    second copy of the 12B transformer is kept.

The policy's parts: the LoRA adapters (the trained one, its files, nft's old adapter) are
:class:`~cgrpo.policies.flux.adapters.LoRAAdapters`, the text encoders
:class:`~cgrpo.policies.flux.text_encoders.TextEncoders`, the references' preparation and
packing :mod:`cgrpo.policies.flux.reference`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cgrpo.data.references import References, count
from cgrpo.policies.base import Condition
from cgrpo.policies.flux.adapters import LoRAAdapters
from cgrpo.policies.flux.config import FluxConfig, _check_component
from cgrpo.policies.flux.latents import pack_latents, position_ids, unpack_latents
from cgrpo.policies.flux.lora import old_adapter_active
from cgrpo.policies.flux.reference import encode_references, prepare_references
from cgrpo.policies.flux.text_encoders import TEXT_MODULES, TextEncoders

__all__ = ["FluxPolicy"]


class FluxPolicy(LoRAAdapters):
    """:class:`~cgrpo.policies.base.Policy` over a FLUX transformer with a peft LoRA.

    Build it from ``config.path`` (``FluxPolicy(config, device)``), or hand in already
    built modules (tests, notebooks): any module given is used as is, the others are
    loaded from ``config.path``. ``transformer_device`` (default: ``device``) is where the
    transformer is placed at construction: ``"cpu"`` when FSDP will shard it onto the GPUs
    (:meth:`cgrpo.run.distributed.Dist.shard_policy` moves each shard to the process's device).
    The text encoders are loaded lazily, on the first prompt
    that is not in ``config.prompt_cache_dir``, so a run with precomputed prompt
    embeddings never holds T5 in memory (their files are still checked up front).
    """

    #: Images per VAE call in :meth:`encode_condition` / :meth:`decode` (bounds VAE memory).
    vae_batch_size: int = 4
    #: The guidance value while :meth:`guidance_set_to` is active (None: ``config.guidance``).
    _guidance: float | None = None

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
        self.text_encoders = TextEncoders(
            {n: given[n] for n in TEXT_MODULES},
            folders,
            device=self.device,
            dtype=self.dtype,
            max_sequence_length=config.max_sequence_length,
            cache_dir=config.prompt_cache_dir,
        )
        self._read_geometry()
        self.transformer.requires_grad_(False)
        if config.start_lora:
            self.merge_lora(config.start_lora)
        self._add_lora()
        if config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()  # FLUX has no dropout: train mode changes nothing numerically

    def _read_geometry(self) -> None:
        """The VAE's scaling and downsampling, the latent and token grids of
        ``config.resolution``, checked against the transformer's input width."""
        vc = self.vae.config
        self.scaling_factor = float(vc.scaling_factor)
        self.shift_factor = float(getattr(vc, "shift_factor", None) or 0.0)
        self.vae_scale = 2 ** (len(vc.block_out_channels) - 1)
        self.latent_channels = int(vc.latent_channels)
        latent_side = self.config.resolution // self.vae_scale
        if latent_side % 2:
            raise ValueError(
                f"resolution {self.config.resolution} px gives an odd latent side {latent_side} "
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
        self._ids: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}  # per layout

    def _position_ids(self, ref_shapes: tuple[tuple[int, int], ...]) -> torch.Tensor:
        """Ids of ``[image tokens ; reference tokens]`` for references of these token grids
        (cached per shape)."""
        if ref_shapes not in self._ids:
            rows, cols = self.tokens_hw
            img, ref = position_ids(self.config.position_scheme, rows, cols, ref_shapes=ref_shapes)
            self._ids[ref_shapes] = torch.cat([img, ref]).to(self.device)
        return self._ids[ref_shapes]

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

    def _vae_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] of one size -> packed, scaled latents (B, H*W/m^2, 4C)."""
        out = []
        for lo in range(0, images.shape[0], self.vae_batch_size):
            x = (images[lo : lo + self.vae_batch_size].to(self.device) * 2 - 1).to(self.dtype)
            with self._autocast():
                z = self.vae.encode(x).latent_dist.mode()
            z = (z.float() - self.shift_factor) * self.scaling_factor
            out.append(pack_latents(z).to(self.dtype))
        return torch.cat(out)

    @torch.no_grad()
    def encode_reference(self, references: References) -> tuple[torch.Tensor, torch.Tensor]:
        """References -> ``(tokens (B, N, 4C), shapes (B, R, 2))``.

        Each pair's R references are prepared (:func:`~cgrpo.policies.flux.reference.
        prepare_references`), VAE-encoded (``(z - shift_factor) * scaling_factor``, the
        posterior mode), packed and concatenated in order; ``shapes[i, k]`` is reference
        k's token grid (rows, cols). Pairs of a batch may differ in size and count: their
        tokens are zero-padded to the longest, and :meth:`velocity` runs each distinct
        layout in its own forward.
        """
        if isinstance(references, torch.Tensor) and self.config.reference_preprocess == "square":
            size = self.config.resolution  # the fast path: one batch of squares
            refs = references.to(self.device, torch.float32)
            if refs.shape[-2:] != (size, size):
                refs = torch.nn.functional.interpolate(
                    refs, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
            tokens = self._vae_tokens(refs)
            shapes = torch.tensor([[self.tokens_hw]] * refs.shape[0], dtype=torch.long)
            return tokens, shapes
        m = 2 * self.vae_scale
        prepared = prepare_references(references, self.config, multiple_of=m)
        return encode_references(prepared, self._vae_tokens, multiple_of=m)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 embeddings (B, L, D), CLIP pooled (B, P)); each distinct prompt is encoded
        once and, with ``prompt_cache_dir``, read from / written to its cache file."""
        return self.text_encoders.encode(prompts)

    def precompute_prompts(self, prompts: list[str]) -> int:
        """Fill ``prompt_cache_dir`` for ``prompts`` (e.g. a whole dataset before training);
        returns how many were newly encoded."""
        return self.text_encoders.precompute(prompts)

    def encode_condition(self, references: References, prompts: list[str]) -> Condition:
        if count(references) != len(prompts):
            raise ValueError(
                f"{count(references)} references but {len(prompts)} prompts: give one each"
            )
        seq, pooled = self.encode_prompts(list(prompts))
        tokens, shapes = self.encode_reference(references)
        self._check_layouts(shapes)
        return Condition(
            prompt_embeds=seq,
            pooled_prompt_embeds=pooled,
            reference_tokens=tokens,
            reference_shapes=shapes,
        )

    @staticmethod
    def _check_layouts(shapes: torch.Tensor) -> None:
        """A multi-process run needs one reference layout per step: each process runs one
        forward per layout in its shard, and FSDP / DDP need the same count on every
        process. Checked on the whole step's batch (every process encodes the same one),
        before any forward, so all processes stop together."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        layouts = {tuple(map(tuple, row)) for row in shapes.tolist()}
        if len(layouts) > 1:
            raise ValueError(
                f"{len(layouts)} reference layouts (sizes / counts) in one step of a "
                "multi-process run: every process must run the same number of forwards, so "
                "give the step's references one layout (one aspect ratio and reference count, "
                "or flux.reference_preprocess=square)"
            )

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        """The velocity of the image tokens; one transformer call per distinct reference
        layout in the batch (a single call when all share one, the usual case)."""
        shapes = condition["reference_shapes"]
        layouts = [tuple((int(r), int(c)) for r, c in row if r > 0) for row in shapes.tolist()]
        distinct = list(dict.fromkeys(layouts))
        if len(distinct) == 1:
            layout = distinct[0]
            return self._call(x, sigma, condition, ids=self._position_ids(layout), layout=layout)
        out = torch.empty_like(x)
        for layout in distinct:
            idx = torch.tensor([i for i, lay in enumerate(layouts) if lay == layout])
            ids = self._position_ids(layout)
            out[idx] = self._call(x[idx], sigma[idx], condition.index(idx), ids=ids, layout=layout)
        return out

    def _call(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        condition: Condition,
        *,
        ids: torch.Tensor,
        layout: tuple[tuple[int, int], ...],
    ) -> torch.Tensor:
        n = x.shape[1]
        b = x.shape[0]
        ref = condition["reference_tokens"][:, : sum(r * c for r, c in layout)]
        hidden = torch.cat([x.to(self.dtype), ref.to(self.dtype)], dim=1)
        text = condition["prompt_embeds"].to(self.dtype)
        txt_ids = torch.zeros(text.shape[1], 3, device=self.device)
        guidance = None
        if self._has_guidance():
            value = self.config.guidance if self._guidance is None else self._guidance
            guidance = torch.full((b,), float(value), device=self.device)
        with self._autocast():
            out = self.transformer(
                hidden_states=hidden,
                encoder_hidden_states=text,
                pooled_projections=condition["pooled_prompt_embeds"].to(self.dtype),
                timestep=sigma.to(self.device, torch.float32),
                img_ids=ids,
                txt_ids=txt_ids,
                guidance=guidance,
                return_dict=False,
            )[0]
        return out[:, :n].to(x.dtype)

    def _has_guidance(self) -> bool:
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    @contextlib.contextmanager
    def guidance_set_to(self, value: float) -> Iterator[None]:
        """Every forward within gets guidance ``value`` instead of ``config.guidance``."""
        if not self._has_guidance():
            raise ValueError(
                f"guidance={value}: this FLUX transformer has no guidance embedding "
                "(guidance_embeds=false, e.g. FLUX.1-schnell); leave guidance null"
            )
        before, self._guidance = self._guidance, float(value)
        try:
            yield
        finally:
            self._guidance = before

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition) -> torch.Tensor:
        return self._forward(x, sigma, condition)

    def reference_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        with torch.no_grad(), self.adapter_disabled():
            return self._forward(x, sigma, condition)

    def old_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        self._old_params()
        with torch.no_grad(), old_adapter_active(self.transformer):
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
