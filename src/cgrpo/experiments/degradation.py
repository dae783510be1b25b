"""The competitive-degradation experiment (``benchmarks/competitive_degradation.py``): its
arms, the settings one sweep runs them with, each run's config, and the order runs train in.

Every arm is the embedded default (``cgrpo/configs/embedded.yaml``) differing only in
shaping / weighting (:data:`ARMS`); the claims are decided on the six :data:`PRIMARY` arms,
the extra arm (naive 2:1) is shown beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ARMS",
    "BASE_RECORD",
    "DEFAULT_ARM",
    "LABELS",
    "NAIVE",
    "PRIMARY",
    "REWARDS",
    "RUN_RECORD",
    "STATIC",
    "Settings",
    "final_pairs",
    "run_config",
    "schedule",
]

PRIMARY = ["naive_1_1", "naive_0.5_0.5", "naive_1_1.5", "sars", "tdw", "sars_tdw"]
TRAIN_ORDER = ["sars_tdw", "naive_1_1", "naive_1_1.5", "sars", "tdw", "naive_0.5_0.5"]
REWARDS = ("identity", "prompt")  #: the two rewards every figure is read on


def _weights(identity: float, prompt: float) -> str:
    """The override of the embedded rewards with these static weights."""
    return (
        f"rewards={{identity: {{kind: embedded_identity, weight: {identity}}}, "
        f"prompt: {{kind: embedded_prompt, weight: {prompt}}}}}"
    )


_NAIVE = ["method.shaping=linear", "method.weighting=static"]
#: arm -> its overrides of the embedded default
ARMS: dict[str, list[str]] = {
    "naive_1_1": [*_NAIVE, _weights(1.0, 1.0)],
    "naive_0.5_0.5": [*_NAIVE, _weights(0.5, 0.5)],
    "naive_1_1.5": [*_NAIVE, _weights(1.0, 1.5)],
    "sars": ["method.shaping=sars", "method.weighting=static", _weights(1.0, 1.0)],
    "tdw": ["method.shaping=linear", "method.weighting=tdw", _weights(1.0, 1.0)],
    "sars_tdw": ["method.shaping=sars", "method.weighting=tdw", _weights(1.0, 1.0)],
    "naive_2_1": [*_NAIVE, _weights(2.0, 1.0)],
}
LABELS = {
    "naive_1_1": "naive GRPO 1:1",
    "naive_0.5_0.5": "naive GRPO 0.5:0.5",
    "naive_1_1.5": "naive GRPO 1:1.5",
    "sars": "SARS only",
    "tdw": "TDW only",
    "sars_tdw": "SARS + TDW",
    "naive_2_1": "naive GRPO 2:1",
}
DEFAULT_ARM = "sars_tdw"
STATIC = [a for a in ARMS if a.startswith("naive")] + ["sars"]  #: arms with static weights
NAIVE = [a for a in ARMS if a.startswith("naive")]

#: what --records keeps of a run: what the report reads, the "done" marker last
RUN_RECORD = [
    "config.yaml", "metrics.csv", "eval.json", "eval_budget/source.json",
    "eval_budget/metrics.json", "eval_final/source.json", "eval_final/metrics.json",
]  # fmt: skip
#: ... and of the shared base evaluation
BASE_RECORD = [
    "model.yaml", "copy.json", "budget/source.json", "budget/metrics.json", "source.json",
    "metrics.json",
]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one sweep runs every arm with (the command line's options): ``steps`` per run,
    a curve point every ``eval_every``, the final evaluation on ``eval_images`` noises x
    ``eval_prompts`` prompts per held-out subject (0: the runs' own), the budget test on
    ``budget_images`` noises (0: the final evaluation's), ``overrides`` for every run, run
    folders under ``out`` and records (None: none) under ``records``."""

    out: Path
    steps: int = 80
    eval_every: int = 20
    eval_images: int = 4
    eval_prompts: int = 0
    budget_images: int = 16
    overrides: tuple[str, ...] = ()
    records: Path | None = None

    def run_dir(self, arm: str, seed: int) -> Path:
        """The run folder of ``arm`` and ``seed``: ``out/<arm>/seed<k>``."""
        return self.out / arm / f"seed{seed}"

    def eval_config(self, out_dir: Path, images_per_pair: int):
        """``cgrpo eval``'s settings for a sweep evaluation into ``out_dir``: the held-out
        pairs of ``eval_prompts`` prompts per subject, ``images_per_pair`` noises each."""
        from cgrpo.eval.config import EvalConfig

        return EvalConfig(
            out_dir=str(out_dir),
            images_per_pair=images_per_pair,
            prompts_per_subject=self.eval_prompts,
        )


def run_config(settings: Settings, arm: str, seed: int, *, run_dir: Path | None = None):
    """The run's config: the embedded default, the sweep's budget, the arm, its overrides;
    in ``run_dir`` (default :meth:`Settings.run_dir`). ``SystemExit`` for a time budget or
    a log interval, which would end a run off its steps."""
    from cgrpo.config.core import load_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    s = settings
    overrides = [
        f"run.out_dir={run_dir or s.run_dir(arm, seed)}", f"run.seed={seed}",
        f"run.steps={s.steps}", f"run.eval_every={s.eval_every}", "run.checkpoint_every=10",
        "run.keep_last=1", f"run.image_every={s.steps}", "run.threads=1",
        "data.eval_noises=1",  # the run's own base / trained: the curve's ends (one noise)
        *ARMS[arm], *s.overrides,
    ]  # fmt: skip
    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, overrides)
    if cfg.run.time_budget or cfg.run.log_every != 1:  # a run continued to more steps must
        raise SystemExit(  # end where one started with them ends: steps alone decide
            "competitive_degradation budgets runs in steps and logs every step: drop the "
            "run.time_budget / run.log_every override (use --steps)"
        )
    return cfg


def final_pairs(cfg, eval_prompts: int = 0) -> int:
    """The held-out pairs of the final evaluation: every held-out subject x ``eval_prompts``
    (0: the runs' own ``data.eval_prompts_per_subject``, the curves')."""
    from cgrpo.run.build import subject_split

    subjects = len(subject_split(cfg).held_out)
    return subjects * (eval_prompts or cfg.data.eval_prompts_per_subject)


def schedule(arms: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The order runs are trained in: the six primary arms seed by seed (every arm gets
    seed 0 before seed 1), then the extra arms seed by seed. Within a seed the default arm
    and naive 1:1 go first (the budget test and claims 2-4 read them) and naive 0.5:0.5,
    the scale check, last: a sweep stopped part-way leaves the arms most claims need."""
    primary = sorted((a for a in arms if a in PRIMARY), key=TRAIN_ORDER.index)
    extra = [a for a in arms if a not in PRIMARY]
    return [(a, k) for k in seeds for a in primary] + [(a, k) for k in seeds for a in extra]
