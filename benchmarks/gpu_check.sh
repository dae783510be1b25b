#!/usr/bin/env bash
# The GPU check, one command per position scheme (each sized to finish in under 8 minutes
# on one H100; computed, not yet run on a card):
#
#   bash benchmarks/gpu_check.sh uno        # UNO: FLUX.1-dev shape, 512 px reference (1024 tokens)
#   bash benchmarks/gpu_check.sh kontext    # Kontext: 1024 px reference (4096 tokens)
#
# Each builds full-size random FLUX (FLUX.1-dev's 19 + 38 blocks, 12 B, bf16, nothing
# downloaded) with the paper's LoRA (UNO's: flux.lora_preset=uno, rank 512, 956,301,312
# parameters) at 512 px with the real token counts (512 T5 tokens, the scheme's own
# reference preparation), and an HPS-v3-sized prompt reward (benchmarks/sized_reward.py:
# Qwen2-VL-7B's 8.29 B bf16 parameters and compute per image) placed as docs/rewards.md
# says: on a GPU of its own when a second one is visible (cuda:1), else on the training
# card. It runs one warm-up step and one timed GRPO step of the paper's setting (G 12, 25
# steps, 14 trained, micro-batches of 4, gradient checkpointing) and prints, naming the
# card: seconds per phase (sample, reward, update, step), peak CUDA memory, tokens and LoRA
# parameters. Without CUDA it stops at once with one message (exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

scheme=${1:-}
if [ "$scheme" != uno ] && [ "$scheme" != kontext ]; then
  echo "usage: bash benchmarks/gpu_check.sh uno|kontext   (one scheme per command, each under 8 minutes on one H100)" >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device is visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo "torch not importable")): run it on a machine with an NVIDIA GPU (>= 80 GB), e.g. through the device tool; nothing was run" >&2
  exit 2
fi

CARD=$("$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible")')
REWARD_DEVICE=$("$PY" -c 'import torch; print("cuda:1" if torch.cuda.device_count() > 1 else "cuda:0")')
echo "gpu_check $scheme on ${CARD}; HPS-v3-sized reward on ${REWARD_DEVICE}"
"$PY" benchmarks/flux_step.py --preset full --steps 1 \
  --reward-params 8.29e9 --reward-device "$REWARD_DEVICE" model.device=cuda \
  flux.position_scheme="$scheme" flux.reference_preprocess="$scheme" flux.dtype=bfloat16 \
  flux.resolution=512 flux.max_sequence_length=512 \
  flux.lora_preset=uno flux.lora_rank=512 flux.gradient_checkpointing=true grpo.group_size=12 \
  grpo.micro_batch_size=4 sampler.num_steps=25 grpo.timestep_fraction=0.6 run.threads=4
