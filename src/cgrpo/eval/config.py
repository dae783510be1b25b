"""The options of ``cgrpo eval`` (:class:`EvalConfig`): which protocol, which model
draws, how many images, which metric columns. Torch-free: the command line reads and
checks it before any model library loads. The protocol itself is
:mod:`cgrpo.eval.protocol`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cgrpo.config.core import option

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    protocol: Literal["embedded", "dreambench"] = option(
        "embedded", "pairs: 'embedded' held-out subjects or 'dreambench' (30 x 25)"
    )
    root: str = option("../shared/data/dreambench", "dreambench: the DreamBench folder")
    prompts_per_subject: int = option(
        0,
        "prompts per subject (0: the run's data.eval_prompts_per_subject on the embedded "
        "world, all 25 on DreamBench)",
    )
    images_per_pair: int = option(
        0,
        "images drawn per pair, each from its own noise (0: the run's data.eval_noises)",
        unit="images",
    )
    seed: int | None = option(None, "seed of the per-image noise (null: the run's data.eval_seed)")
    steps: int = option(
        0, "sampler steps (0: the run's run.eval_steps, else sampler.num_steps)", unit="steps"
    )
    batch_size: int = option(
        0, "images drawn and scored per batch (0: the run's run.eval_batch_size)", unit="images"
    )
    out_dir: str = option("runs/eval", "output folder (images, metrics, grid)")
    base: bool = option(False, "also evaluate the starting policy, under out_dir/base")
    ema: bool = option(True, "evaluate the checkpoint's EMA weights when it has them")
    metrics: dict[str, Any] = option(
        {},
        "columns: name -> {kind: reward registry name, ...its options}; empty: the "
        "protocol's defaults (embedded: the run's rewards; DreamBench: offline identity "
        "'effnet')",
    )
    identity_column: str = option("", "the identity column cgrpo compare plots (x)")
    prompt_column: str = option("", "the prompt-following column cgrpo compare plots (y)")
