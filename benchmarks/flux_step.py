"""Memory and seconds per GRPO step of the FLUX policy, with random weights of real sizes.

Builds a random-weight FLUX model (:mod:`cgrpo.policies.random_flux`: ``medium`` = FLUX
block width with 2 + 4 blocks, ``full`` = FLUX.1-dev's 19 + 38 blocks) with the configured
LoRA, and runs training steps of the one trainer on generated plain-colour references.
The rewards are the model-free ``colour`` ones (brightness and redness): reward models are
timed by ``benchmarks/reward_speed.py``; this script times and sizes the policy. Prints, per
process: parameters held (frozen, LoRA; part of the model under FSDP), the bytes of the
training state it holds (weights, LoRA gradients, AdamW moments), its memory now and at
peak (CUDA allocated on a GPU; resident set on CPU, whose peak includes building the full
model before FSDP shards it), and the mean seconds of sampling and update.

    # one GPU, the paper's setting at 512 px (rank 512 LoRA, G 12, 25 steps)
    python benchmarks/flux_step.py --preset full model.device=cuda
    # 8 GPUs, sharded
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 8 \\
        benchmarks/flux_step.py --preset full model.device=cuda run.fsdp=true
    # CPU, two processes, small: replicated vs sharded
    accelerate launch --multi_gpu --num_processes 2 benchmarks/flux_step.py --preset medium \\
        flux.resolution=64 flux.dtype=float32 [run.fsdp=true]

Overrides are training-config keys (``key=value``); the defaults are the paper's
(configs/uno_syncd.yaml) with prompts_per_step = the number of processes. A rollout
schedule other than the paper's ``full`` is one more override, e.g.
``sampler.schedule.kind=branch sampler.schedule.k=2 grpo.timestep_fraction=1`` or
``sampler.schedule.kind=window sampler.schedule.size=4 grpo.timestep_fraction=1``.
``--variants`` times each schedule x objective of VARIANTS in turn (one process), on a
fresh policy each, and prints one table::

    python benchmarks/flux_step.py --preset medium --variants flux.resolution=64 flux.dtype=float32
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from cgrpo.config.core import load_config
from cgrpo.policies.flux.policy import FluxPolicy
from cgrpo.policies.random_flux import random_flux
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist, launched_world_size
from cgrpo.train.trainer import GRPOTrainer

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "gray"]
PROMPTS = ["a dog in the snow", "a red can on the beach", "a cat wearing a hat"]


def pairs_file(folder: Path, n: int) -> Path:
    """``n`` plain-colour references with prompts, as a JSONL pairs file."""
    rows = []
    for i in range(n):
        Image.new("RGB", (64, 64), COLOURS[i % len(COLOURS)]).save(folder / f"ref{i}.png")
        rows.append(json.dumps({"reference": f"ref{i}.png", "prompt": PROMPTS[i % len(PROMPTS)]}))
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(rows))
    return path


def memory_gb(device: torch.device) -> tuple[float, float]:
    """(now, peak) of the process: CUDA allocated on a GPU, resident set size on CPU (whose
    peak includes building the full model before FSDP shards it)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 1e9, torch.cuda.max_memory_allocated(
            device
        ) / 1e9
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    now = pages * resource.getpagesize() / 1e9
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def held(params: list[torch.nn.Parameter]) -> int:
    """Elements of ``params`` this process stores."""
    return sum(Dist.local(p).numel() for p in params)


def tokens(trainer: GRPOTrainer) -> dict[str, int]:
    """Tokens of one sample in the transformer: text (T5), image (target) and reference."""
    import random

    refs, prompts = trainer.data.sample(1, random.Random(0))
    cond = trainer.policy.encode_condition(refs, prompts)
    return {
        "text_tokens": int(cond["prompt_embeds"].shape[1]),
        "image_tokens": int(trainer.policy.latent_shape()[0]),
        "reference_tokens": int(cond["reference_tokens"].shape[1]),
    }


def state_gb(trainer: GRPOTrainer) -> float:
    """Bytes this process stores of the training state: transformer weights (frozen and
    LoRA), LoRA gradients and AdamW moments."""
    local = Dist.local
    tensors = [local(p) for p in trainer.policy.transformer.parameters()]
    tensors += [local(p.grad) for p in trainer.params if p.grad is not None]
    tensors += [local(v) for s in trainer.optimizer.state.values() for v in s.values() if v.dim()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e9


#: ``--variants``: rollout schedule x objective (the paper's is grpo_full).
VARIANTS: dict[str, list[str]] = {
    "grpo_full": [],
    "grpo_window": ["sampler.schedule.kind=window", "sampler.schedule.size=4",
                    "grpo.timestep_fraction=1"],
    "grpo_branch": ["sampler.schedule.kind=branch", "sampler.schedule.k=2",
                    "grpo.timestep_fraction=1"],
    "nft_full": ["method.objective.kind=nft", "grpo.timestep_fraction=0.3"],
    "nft_branch": ["method.objective.kind=nft", "sampler.schedule.kind=branch",
                   "sampler.schedule.k=2", "grpo.timestep_fraction=0.3"],
}  # fmt: skip


def variants(args: argparse.Namespace) -> None:
    """Each of VARIANTS on a fresh policy; one table of per-phase seconds and peak memory."""
    print("variant       s sample  s update  s step  peak GB")
    for name, extra in VARIANTS.items():
        device = torch.device(next((o.split("=", 1)[1] for o in args.overrides
                                    if o.startswith("model.device=")), "cpu"))  # fmt: skip
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = measure(args.preset, args.steps, [*args.overrides, *extra])[0][0]
        print(
            f"{name:<12}  {row['sec_sample']:>8.2f}  {row['sec_update']:>8.2f}  "
            f"{row['sec_total']:>6.2f}  {row['peak_gb']:>7.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="medium", choices=["tiny", "medium", "full"])
    ap.add_argument("--steps", type=int, default=2, help="timed steps (after one warm-up)")
    ap.add_argument("--variants", action="store_true", help="time every schedule x objective")
    ap.add_argument(
        "--reward-params",
        type=float,
        default=0.0,
        help="prompt reward: a stand-in of this many parameters (benchmarks/sized_reward.py; "
        "8.29e9 = HPS-v3's Qwen2-VL-7B) instead of the model-free colour reward",
    )
    ap.add_argument("--reward-device", default="", help="its device (default: the process's)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.variants:
        variants(args)
        return
    overrides = list(args.overrides)
    if args.reward_params:
        import sized_reward  # noqa: F401  (registers reward kind "sized")

        where = f", device: {args.reward_device}" if args.reward_device else ""
        overrides.append(f"rewards.prompt={{kind: sized, params: {args.reward_params}{where}}}")
    rows, dist, cfg, counts, build_s, device = measure(args.preset, args.steps, overrides)
    report(rows, dist, cfg, counts, build_s, device, args.preset)


def measure(preset: str, steps: int, extra: list[str]):
    """Build the random FLUX policy and the trainer, time ``steps`` training steps."""
    world = launched_world_size()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        overrides = [
            "model.kind=flux", "data.kind=jsonl", f"data.path={pairs_file(folder, 8)}",
            "data.image_root=null", "data.fields={}", "data.eval_root=null",
            "data.allow_eval_overlap=true",  # timing only: no evaluation
            f"data.prompts_per_step={world}", "flux.start_lora=null", "flux.path=null",
            "flux.prompt_cache_dir=null",
            # references at the target's size unless overridden (gpu_check.sh passes each
            # model's own: UNO's 512 px, Kontext's 1024 px)
            "flux.reference_preprocess=square",
            f"run.out_dir={folder / 'run'}", "run.eval=false",
            "run.image_every=0", "run.checkpoint_every=0", "run.steps=1000000",
            "rewards.identity={kind: colour, measure: brightness}",
            "rewards.prompt={kind: colour, measure: redness}",
            *extra,
        ]  # fmt: skip
        cfg = load_config(TrainConfig, ROOT / "configs" / "uno_syncd.yaml", overrides)
        dist = Dist.from_env(cfg.model.device, cfg.run.fsdp)
        device = torch.device(dist.device or cfg.model.device)
        dtype = torch.bfloat16 if cfg.flux.dtype == "bfloat16" else torch.float32
        t0 = time.perf_counter()
        # FSDP: the transformer is built in CPU memory; each GPU receives only its shards
        home = torch.device("cpu") if dist.fsdp else device
        parts = random_flux(preset, dtype, home, seed=0)
        policy = FluxPolicy(cfg.flux, device, transformer_device=home, **parts)
        build_s = time.perf_counter() - t0
        trainer = GRPOTrainer(cfg, policy=policy, dist=dist)
        counts = policy.parameter_counts()
        lora = trainer.params
        frozen = [p for p in policy.transformer.parameters() if not p.requires_grad]
        trainer.train_step()  # warm-up
        phases: dict[str, list[float]] = {"sample": [], "reward": [], "update": [], "total": []}
        for _ in range(steps):
            t = time.perf_counter()
            m = trainer.train_step().metrics
            for k in ("sample", "reward", "update"):
                phases[k].append(m[f"sec_{k}"])
            phases["total"].append(time.perf_counter() - t)
        row = {
            "rank": dist.rank,
            "frozen_held": held(frozen),
            "lora_held": held(lora),
            "state_gb": round(state_gb(trainer), 2),
            **tokens(trainer),
            **dict(
                zip(("now_gb", "peak_gb"), (round(v, 2) for v in memory_gb(device)), strict=True)
            ),
            **{f"sec_{k}": round(statistics.mean(v), 2) for k, v in phases.items()},
        }
        rows = dist.gather_objects([row])
    return rows, dist, cfg, counts, build_s, device


def report(rows, dist, cfg, counts, build_s, device, preset) -> None:
    if not dist.is_main:
        return
    world = dist.world
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    mode = "FSDP" if dist.fsdp else "DDP" if world > 1 else "single"
    print(f"device: {name} x {world} process(es), {mode}; torch threads {torch.get_num_threads()}")
    frozen_b, r0 = counts["frozen"] / 1e9, rows[0]
    print(
        f"preset {preset}: frozen {frozen_b:.3f} B, LoRA {counts['lora']:,} parameters "
        f"(rank {cfg.flux.lora_rank}, {counts['lora_layers']} layers), {cfg.flux.dtype}, "
        f"{cfg.flux.resolution} px, G {cfg.grpo.group_size}, {cfg.sampler.num_steps} steps, "
        f"micro-batch {cfg.grpo.micro_batch_size or 'all'}; built in {build_s:.1f} s"
    )
    print(
        f"tokens per sample: text {r0['text_tokens']}, image {r0['image_tokens']}, "
        f"reference {r0['reference_tokens']}; rewards: "
        + ", ".join(f"{k} ({v['kind']})" for k, v in cfg.rewards.items())
    )
    mem = "CUDA allocated" if device.type == "cuda" else "resident set"
    print(f"state GB: weights + LoRA grads + AdamW held; now / peak GB: {mem}")
    print(
        "rank  frozen held  LoRA held  state GB  now GB  peak GB  s sample  s reward  "
        "s update  s step"
    )
    for r in rows:
        print(
            f"{r['rank']:>4}  {r['frozen_held'] / counts['frozen']:>10.1%}  "
            f"{r['lora_held'] / counts['lora']:>8.1%}  {r['state_gb']:>8.2f}  "
            f"{r['now_gb']:>6.2f}  {r['peak_gb']:>7.2f}  {r['sec_sample']:>8.2f}  "
            f"{r['sec_reward']:>8.2f}  {r['sec_update']:>8.2f}  {r['sec_total']:>6.2f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
