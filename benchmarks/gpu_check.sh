#!/usr/bin/env bash
# The GPU check: full-size random FLUX (FLUX.1-dev's 19 + 38 blocks, 12 B, bf16) with the
# paper's LoRA (UNO's: flux.lora_preset=uno, rank 512 on the fused qkv and output projection
# of each stream and block, 956,301,312 parameters) at 512 px, one GRPO step of
# the paper's setting (G 12, 25 steps, timestep fraction 0.6, micro-batches of 4, gradient
# checkpointing) for each position scheme (UNO and Kontext), each with its model's own
# reference preparation (UNO: 512 px, 1024 reference tokens; Kontext: 1024 px, 4096), after
# one warm-up step;
# prints one table: per-phase seconds and peak CUDA memory, naming the card.
#
#   bash benchmarks/gpu_check.sh            # about 6-8 minutes on one H100/H200-class card
#
# Needs one CUDA device with >= 80 GB (weights 24 GB bf16 + LoRA, its gradients and AdamW
# in fp32). Without CUDA it stops at once with one message (exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device is visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo "torch not importable")): run it on a machine with an NVIDIA GPU (>= 80 GB), e.g. through the device tool; nothing was run" >&2
  exit 2
fi

CARD=$("$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB")')
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for scheme in uno kontext; do
  "$PY" benchmarks/flux_step.py --preset full --steps 1 model.device=cuda \
    flux.position_scheme=$scheme flux.reference_preprocess=$scheme flux.dtype=bfloat16 \
    flux.resolution=512 \
    flux.lora_preset=uno flux.lora_rank=512 flux.gradient_checkpointing=true grpo.group_size=12 \
    grpo.micro_batch_size=4 sampler.num_steps=25 grpo.timestep_fraction=0.6 \
    run.threads=4 > "$OUT/$scheme.txt" 2> "$OUT/$scheme.err" || {
      echo "gpu_check: the $scheme step failed; its last lines:" >&2; tail -20 "$OUT/$scheme.err" >&2; exit 1; }
done

echo "gpu_check on ${CARD}: full-size random FLUX, bf16, UNO's LoRA (lora_preset uno) rank 512, 512 px, G 12, 25 steps, micro-batch 4; references prepared as each model does (uno 512 px, kontext 1024 px)"
echo "scheme    s sample  s update  s step  peak GB  (state GB: LoRA weights + grads + AdamW)"
for scheme in uno kontext; do
  row=$(tail -1 "$OUT/$scheme.txt")
  # flux_step's row: rank frozen% lora% state_gb now_gb peak_gb s_sample s_update s_step
  echo "$row" | awk -v s="$scheme" '{printf "%-8s  %8s  %8s  %6s  %7s  (%s)\n", s, $7, $8, $9, $6, $4}'
done
head -2 "$OUT/uno.txt"
