"""Memory per GPU of the paper's FLUX training, per scheme and parallelism (COMPUTED).

Parameter counts are exact: FLUX.1-dev's transformer and VAE and CLIP-L are instantiated
from their published configs on the ``meta`` device (no memory, nothing downloaded) and
the LoRA is injected by the production :func:`cgrpo.policies.flux.lora.inject_lora`.
Everything else is arithmetic from the stated assumptions:

* transformer and VAE/CLIP in bf16 (2 B per parameter); LoRA weights, gradients and the
  two AdamW moments in fp32 (4 x 4 B per LoRA parameter);
* activations per sample with gradient checkpointing (bf16, width 3072): the 57 block
  inputs kept, ``57 * n * 3072 * 2 B``, plus the recomputed block, about 21 tensors of
  ``n * 3072`` and LoRA intermediates ``n * r`` per adapted layer of one block, where
  ``n`` = text + image + reference tokens (512 + 1024 + 1024 for UNO, + 4096 for Kontext's
  1024 px reference); times ``grpo.micro_batch_size``;
* rewards: DINOv2-base (86.6 M, fp32) on every training GPU; HPS-v3 (Qwen2-VL-7B, 8.29 B
  in bf16) on the training GPU, or 0 when it runs on its own GPU / behind a server;
* FSDP over N GPUs: transformer and LoRA state sharded 1/N, but the LoRA gradients stay
  unsharded while a step's micro-batches accumulate (FSDP2 under ``no_sync``), plus two
  all-gathered blocks at a time;
* CUDA context, workspaces and fragmentation: 3 GB (assumed).

    python benchmarks/memory_table.py [--rank 512] [--micro-batch 4] [--gpus 8]

docs/gpu.md §4 quotes its output.
"""

from __future__ import annotations

import argparse

import torch

from cgrpo.policies.flux.config import FluxConfig
from cgrpo.policies.flux.lora import inject_lora
from cgrpo.policies.random_flux import PRESETS

GB = 1e9
TOKENS = {"uno": (512, 1024, 1024), "kontext": (512, 1024, 4096)}  # text, image, reference
DINOV2_BASE, HPSV3 = 86.6e6, 8.29e9
CONTEXT_GB, WIDTH, BLOCKS = 3.0, 3072, 57


def counts(rank: int, preset: str) -> dict[str, int]:
    """Exact parameter counts: transformer, its LoRA (``preset``), LoRA layers per block,
    VAE + CLIP-L text encoder."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**PRESETS["full"]["transformer"])  # FLUX.1-dev's shape
        frozen = sum(p.numel() for p in model.parameters())
        inject_lora(model, FluxConfig(lora_rank=rank, lora_preset=preset))
        lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
        layers = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A.default"))
        vae = AutoencoderKL(**PRESETS["full"]["vae"])
        clip_l = CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
        )
        clip = CLIPTextModel(clip_l)
    others = sum(p.numel() for m in (vae, clip) for p in m.parameters())
    return {"frozen": frozen, "lora": lora, "lora_layers": layers, "vae_clip": others}


def activations_gb(tokens: int, rank: int, layers_per_block: float, micro_batch: int) -> float:
    """Checkpointed activations of ``micro_batch`` samples of ``tokens`` tokens (bf16)."""
    kept = BLOCKS * tokens * WIDTH * 2
    block = 21 * tokens * WIDTH * 2 + layers_per_block * tokens * rank * 2
    return micro_batch * (kept + block) / GB


def rows(c: dict[str, int], *, scheme: str, rank: int, micro_batch: int, gpus: int) -> list:
    """(item, DDP per GPU, FSDP per GPU) in GB for one scheme."""
    n = sum(TOKENS[scheme])
    transformer, lora_state = c["frozen"] * 2 / GB, c["lora"] * 16 / GB
    act = activations_gb(n, rank, c["lora_layers"] / BLOCKS, micro_batch)
    gathered = 2 * transformer / BLOCKS
    table = [
        ("transformer, bf16", transformer, transformer / gpus + gathered),
        ("LoRA weights + AdamW moments, fp32", lora_state * 3 / 4, lora_state * 3 / 4 / gpus),
        ("LoRA gradients, fp32 (unsharded while accumulating)", lora_state / 4, lora_state / 4),
        ("VAE + CLIP-L, bf16", c["vae_clip"] * 2 / GB, c["vae_clip"] * 2 / GB),
        (f"activations, micro-batch {micro_batch} ({n} tokens)", act, act),
        ("DINOv2-base identity reward, fp32", DINOV2_BASE * 4 / GB, DINOV2_BASE * 4 / GB),
        ("CUDA context, workspaces (assumed)", CONTEXT_GB, CONTEXT_GB),
    ]
    total = (sum(r[1] for r in table), sum(r[2] for r in table))
    hps = HPSV3 * 2 / GB
    table += [
        ("**total, HPS-v3 on its own GPU / server**", *total),
        ("**total, HPS-v3 on the training GPU**", total[0] + hps, total[1] + hps),
    ]
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rank", type=int, default=512)
    ap.add_argument("--preset", default="uno", choices=["uno", "diffusers_all"])
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8, help="FSDP's process count")
    args = ap.parse_args()
    c = counts(args.rank, args.preset)
    print(
        f"FLUX.1-dev transformer {c['frozen']:,} parameters; LoRA ({args.preset}, rank "
        f"{args.rank}) {c['lora']:,} in {c['lora_layers']} layers; VAE + CLIP-L "
        f"{c['vae_clip']:,} (COMPUTED, GB = 1e9 bytes)"
    )
    for scheme in TOKENS:
        t = TOKENS[scheme]
        print(f"\n{scheme}: {t[0]} text + {t[1]} image + {t[2]} reference tokens\n")
        print(f"| item | DDP, per GPU | FSDP over {args.gpus}, per GPU |")
        print("| --- | ---: | ---: |")
        for item, ddp, fsdp in rows(
            c, scheme=scheme, rank=args.rank, micro_batch=args.micro_batch, gpus=args.gpus
        ):
            print(f"| {item} | {ddp:.1f} GB | {fsdp:.1f} GB |")


if __name__ == "__main__":
    main()
