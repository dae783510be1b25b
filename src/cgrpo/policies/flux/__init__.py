"""FLUX-family subject-driven policies (FLUX.1 Kontext, UNO) behind the policy protocol.

Everything in this package is FLUX-specific: a diffusers ``FluxTransformer2DModel`` (the
flow transformer), the FLUX ``AutoencoderKL`` (16 latent channels, 8x downsampling), the
two FLUX text encoders (CLIP-L for the pooled vector, T5-XXL for the token sequence) and a
peft LoRA on the transformer, which is all GRPO trains.

Modules, each documenting its part:

- :mod:`~cgrpo.policies.flux.config`: :class:`FluxConfig` (section ``flux``) and the
  weights layout on disk, read only from disk and checked up front
  (:class:`FluxWeightsError`);
- :mod:`~cgrpo.policies.flux.latents`: packed 2x2 latent tokens and the rotary position
  ids of the reference tokens (``kontext`` or ``uno``);
- :mod:`~cgrpo.policies.flux.lora`: the trainable LoRA, its safetensors files and merging
  a starting LoRA (e.g. UNO's) into the base weights;
- :mod:`~cgrpo.policies.flux.uno_lora`: a trained LoRA in bytedance/UNO's file format
  (its processors' ``qkv_lora`` / ``proj_lora`` keys), a starting UNO LoRA concatenated in;
- :mod:`~cgrpo.policies.flux.adapters`: the policy's LoRA adapters: the trained one
  (parameters, state dict, files, the starting model with it bypassed) and nft's old
  policy as a second adapter;
- :mod:`~cgrpo.policies.flux.text_encoders`: CLIP and T5, loaded on the first prompt not
  in the cache;
- :mod:`~cgrpo.policies.flux.prompt_cache`: cached T5/CLIP prompt embeddings on disk;
- :mod:`~cgrpo.policies.flux.reference`: references prepared as each pipeline does, then
  VAE-encoded and packed per pair;
- :mod:`~cgrpo.policies.flux.policy`: :class:`FluxPolicy`: VAE scaling, the reference in
  context, sign conventions (``timestep = sigma`` gives ``v = noise - x0``), guidance and
  the reference policy (the same transformer with the LoRA disabled).

Importing this package imports nothing (no torch): the config reads :class:`FluxConfig`
without loading a model library; import the names from their modules.
"""
