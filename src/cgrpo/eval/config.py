"""The options of ``cgrpo eval`` (:class:`EvalConfig`): which protocol, which model
draws, how many images, which metric columns. Torch-free: the command line reads and
checks it before any model library loads. The protocol itself is
:mod:`cgrpo.eval.protocol`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from cgrpo.config.core import option
from cgrpo.sampling.shift import SHIFT_RULES

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
    guidance: float | None = option(
        None,
        "FLUX guidance-embedding value while drawing (null: the run's flux.guidance; the "
        "paper evaluates with 4); refused on the embedded generator, which has none",
    )
    shift: float | Literal["auto", "uno"] | None = option(
        None,
        "time shift of the sigma schedule (null: the run's sampler.shift; a number; 'auto': "
        "FLUX's resolution rule exp(mu(image tokens)), 1.88 at 512 px; 'uno': the rule with "
        "the token count UNO's pipeline passes, 1.58 at 512 px, as the paper evaluated)",
    )
    ode_solver: Literal["euler", "dpm2m", "heun"] | None = option(
        None,
        "solver of the deterministic draws (null: the run's sampler.ode_solver): euler, "
        "dpm2m (DPM-Solver++(2M), 1 pass per step) or heun (2 passes per step but the last)",
    )
    batch_size: int = option(
        0, "images drawn and scored per batch (0: the run's run.eval_batch_size)", unit="images"
    )
    micro_batch_size: int = option(
        0,
        "images per pass of the models within a batch; the images do not depend on it "
        "(0: the run's run.eval_micro_batch_size)",
        unit="images",
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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError naming the key of the first bad value (before any model loads)."""
        for key in (
            "images_per_pair",
            "batch_size",
            "micro_batch_size",
            "steps",
            "prompts_per_subject",
        ):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 1 (0: the run's), got {getattr(self, key)}")
        if self.guidance is not None and not _positive(self.guidance):
            raise ValueError(
                f"guidance must be a finite number > 0 (null: the run's flux.guidance), "
                f"got {self.guidance!r}"
            )
        if isinstance(self.shift, str):
            if self.shift not in SHIFT_RULES:
                raise ValueError(f"shift must be a number, null or one of {SHIFT_RULES}")
        elif self.shift is not None and not _positive(self.shift):
            raise ValueError(
                f"shift must be a finite number > 0, 'auto', 'uno' or null (the run's "
                f"sampler.shift), got {self.shift!r}"
            )


def _positive(x: float) -> bool:
    """``x`` is a finite number > 0 (bools are not numbers here)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0
