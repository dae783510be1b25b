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
(3.5, the pipelines' default), again un-multiplied (the transformer does the x1000).

Reference policy
    :meth:`FluxPolicy.reference_velocity` is the same forward with the LoRA disabled (the
    starting model, i.e. the base plus any merged ``start_lora``), under ``no_grad``; no
    second copy of the 12B transformer is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cgrpo.data.references import References, count
from cgrpo.policies.base import Condition
from cgrpo.policies.flux.config import FluxConfig, _check_component
from cgrpo.policies.flux.latents import pack_latents, position_ids, unpack_latents
from cgrpo.policies.flux.lora import (
    _ADAPTER,
    OLD_ADAPTER,
    adapter_params,
    add_old_adapter,
    inject_lora,
    load_lora,
    merge_lora,
    old_adapter_active,
    save_lora,
)
from cgrpo.policies.flux.prompt_cache import PromptCache
from cgrpo.policies.flux.reference import prepare_reference

__all__ = ["FluxPolicy"]


class FluxPolicy:
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
        self.prompt_cache = PromptCache(config.prompt_cache_dir, config.max_sequence_length)
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
        self._ids: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}  # per layout

        self.transformer.requires_grad_(False)
        if config.start_lora:
            self.merge_lora(config.start_lora)
        self._add_lora()
        if config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()  # FLUX has no dropout: train mode changes nothing numerically

    # -- construction helpers ------------------------------------------------------------------

    def _position_ids(self, ref_shapes: tuple[tuple[int, int], ...]) -> torch.Tensor:
        """Ids of ``[image tokens ; reference tokens]`` for references of these token grids
        (cached per shape)."""
        if ref_shapes not in self._ids:
            rows, cols = self.tokens_hw
            img, ref = position_ids(self.config.position_scheme, rows, cols, ref_shapes)
            self._ids[ref_shapes] = torch.cat([img, ref]).to(self.device)
        return self._ids[ref_shapes]

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
        self.lora_alpha = inject_lora(self.transformer, self.config)

    def merge_lora(self, path: str | Path) -> int:
        """Merge a LoRA file into the (frozen) base weights: ``W += alpha / r * B @ A``.

        See :func:`cgrpo.policies.flux.lora.merge_lora` for the formats it accepts.
        Returns how many linear layers were changed. Must run before the trainable LoRA
        is injected (the constructor does so for ``start_lora``).
        """
        return merge_lora(self.transformer, path)

    @property
    def _lora_params(self) -> list[torch.nn.Parameter]:
        """The trainable LoRA weights (adapter ``"default"``; not nft's old adapter), looked
        up each time: FSDP replaces the parameter objects."""
        return list(adapter_params(self.transformer).values())

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

    def prepare_references(self, references: References) -> list[list[torch.Tensor]]:
        """Per pair, its references as the model's pipeline prepares them
        (``flux.reference_preprocess``, :mod:`cgrpo.policies.flux.reference`)."""
        c = self.config
        mode = c.reference_preprocess
        if isinstance(references, torch.Tensor):
            if mode != "square":
                raise ValueError(
                    f"flux.reference_preprocess={mode} needs each reference whole, but the "
                    "data gave centre-cropped squares: build the data with "
                    "cgrpo.run.build.build_data (it keeps the aspect ratio for kontext and uno)"
                )
            pairs = [[r] for r in references]
        elif mode == "square":  # the dataset's square view of every reference
            pairs = [list(references.pair_views(i)) for i in range(len(references))]
        else:
            pairs = [list(r) for r in references.images]
        m = 2 * self.vae_scale
        out, done = [], {}
        for refs in pairs:
            long_side = c.uno_ref_size if c.uno_ref_size > 0 else (512 if len(refs) == 1 else 320)
            row = []
            for r in refs:
                key = (id(r), long_side)  # pairs repeated in a batch share their tensors
                if key not in done:
                    done[key] = (r, prepare_reference(
                        r, mode, resolution=c.resolution, multiple_of=m, long_side=long_side
                    ))  # fmt: skip
                row.append(done[key][1])
            out.append(row)
        return out

    @torch.no_grad()
    def encode_reference(self, references: References) -> tuple[torch.Tensor, torch.Tensor]:
        """References -> ``(tokens (B, N, 4C), shapes (B, R, 2))``.

        Each pair's R references are prepared (:meth:`prepare_references`), VAE-encoded
        (``(z - shift_factor) * scaling_factor``, the posterior mode), packed and
        concatenated in order; ``shapes[i, k]`` is reference k's token grid (rows, cols).
        Pairs of a batch may differ in size and count: their tokens are zero-padded to the
        longest, and :meth:`velocity` runs each distinct layout in its own forward.
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
        prepared = self.prepare_references(references)
        unique = {id(r): r for refs in prepared for r in refs}  # repeated pairs share tensors
        by_size: dict[tuple[int, ...], list[int]] = {}
        for key, r in unique.items():
            by_size.setdefault(tuple(r.shape), []).append(key)
        encoded: dict[int, torch.Tensor] = {}
        for keys in by_size.values():  # one VAE batch per size
            tokens = self._vae_tokens(torch.stack([unique[k] for k in keys]))
            encoded.update(zip(keys, tokens, strict=True))
        rows = []
        for refs in prepared:
            grid = [(r.shape[-2] // m, r.shape[-1] // m) for r in refs]
            rows.append((torch.cat([encoded[id(r)] for r in refs]), grid))
        n = max(t.shape[0] for t, _ in rows)
        r_max = max(len(g) for _, g in rows)
        width = rows[0][0].shape[1]
        tokens = torch.zeros(len(rows), n, width, dtype=self.dtype, device=self.device)
        shapes = torch.zeros(len(rows), r_max, 2, dtype=torch.long)
        for i, (t, g) in enumerate(rows):
            tokens[i, : t.shape[0]] = t
            shapes[i, : len(g)] = torch.tensor(g)
        return tokens, shapes

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
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        todo: list[str] = []
        for p in dict.fromkeys(prompts):
            cached = self.prompt_cache.load(p)
            if cached is not None:
                found[p] = cached
            else:
                todo.append(p)
        for lo in range(0, len(todo), self.text_batch_size):
            chunk = todo[lo : lo + self.text_batch_size]
            seq, pooled = self._run_text_encoders(chunk)
            for i, p in enumerate(chunk):
                found[p] = (seq[i].cpu(), pooled[i].cpu())
                self.prompt_cache.save(p, *found[p])
        seq = torch.stack([found[p][0] for p in prompts]).to(self.device, self.dtype)
        pooled = torch.stack([found[p][1] for p in prompts]).to(self.device, self.dtype)
        return seq, pooled

    def precompute_prompts(self, prompts: list[str]) -> int:
        """Fill ``prompt_cache_dir`` for ``prompts`` (e.g. a whole dataset before training);
        returns how many were newly encoded."""
        if self.prompt_cache.folder is None:
            raise ValueError("set flux.prompt_cache_dir to precompute prompt embeddings")
        todo = [p for p in dict.fromkeys(prompts) if p not in self.prompt_cache]
        self.encode_prompts(todo)
        return len(todo)

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
            return self._call(x, sigma, condition, self._position_ids(distinct[0]), distinct[0])
        out = torch.empty_like(x)
        for layout in distinct:
            idx = torch.tensor([i for i, lay in enumerate(layouts) if lay == layout])
            ids = self._position_ids(layout)
            out[idx] = self._call(x[idx], sigma[idx], condition.index(idx), ids, layout)
        return out

    def _call(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        condition: Condition,
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
        if getattr(self.transformer.config, "guidance_embeds", False):
            guidance = torch.full((b,), float(self.config.guidance), device=self.device)
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

    # -- the old policy (HasOldPolicy): a second LoRA adapter, never a second transformer ------

    def enable_old_policy(self) -> None:
        if not adapter_params(self.transformer, OLD_ADAPTER):
            add_old_adapter(self.transformer, self.config, self.lora_alpha)

    def _old_params(self) -> dict[str, torch.nn.Parameter]:
        old = adapter_params(self.transformer, OLD_ADAPTER)
        if not old:
            raise RuntimeError("this policy keeps no old policy: call enable_old_policy() first")
        return old

    def old_velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: Condition
    ) -> torch.Tensor:
        self._old_params()
        with torch.no_grad(), old_adapter_active(self.transformer):
            return self._forward(x, sigma, condition)

    @torch.no_grad()
    def soft_update_old(self, decay: float) -> None:
        """``old <- decay old + (1 - decay) current`` per LoRA weight; under FSDP both
        adapters are sharded alike, so each process updates its own shard."""
        old = self._old_params()
        for name, p in adapter_params(self.transformer).items():
            q = old[name.replace(f".{_ADAPTER}.", f".{OLD_ADAPTER}.")]
            q.mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    def old_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._old_params().items()}

    def load_old_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        old = self._old_params()
        if set(state) != set(old):
            raise ValueError(
                f"old-policy state does not fit this policy: {len(state)} weights given, "
                f"{len(old)} expected (rank/targets differ?)"
            )
        for k, v in state.items():
            old[k].copy_(v)

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
        return save_lora(
            path, self.trainable_state_dict(), self.config.lora_rank, self.lora_alpha,
            self.config.lora_targets,
        )  # fmt: skip

    def load_lora(self, path: str | Path) -> None:
        """Load a LoRA written by :meth:`save_lora` into the trainable adapter."""
        state, _ = load_lora(path)
        self.load_trainable_state_dict(state)

    def parameter_counts(self) -> dict[str, int]:
        """Frozen transformer parameters, LoRA parameters and adapted layers."""
        total = sum(p.numel() for p in self.transformer.parameters())
        lora = sum(p.numel() for p in self._lora_params)
        return {"frozen": total - lora, "lora": lora, "lora_layers": len(self._lora_params) // 2}
