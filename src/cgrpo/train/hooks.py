"""What the loop does around its steps: held-out evaluation, the metrics log and image
grids at the run's intervals (``run.eval_every``, ``run.log_every``, ``run.image_every``),
the evaluation summary ``eval.json`` (``truth`` and ``base`` before the first step,
``trained`` after the last) and the held-out progress plot ``progress.png``
(:mod:`cgrpo.io.progress_plot`: rewritten after each mid-run evaluation and at the end).

:class:`EvalLogHooks` is one part of :class:`cgrpo.train.trainer.GRPOTrainer` (which builds
the attributes it names).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cgrpo.data.references import References, reward_view
from cgrpo.eval.evaluator import EvalPairs, Evaluator, grid_items
from cgrpo.eval.summary import gap_closed
from cgrpo.io.atomic import atomic_write
from cgrpo.io.interrupts import interruptible
from cgrpo.io.progress_plot import plot_progress, progress_series
from cgrpo.io.run_log import MetricsLog, plot_curves, save_grid
from cgrpo.policies.base import Policy
from cgrpo.rewards.set import RewardSet
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist
from cgrpo.train.state import TrainState

__all__ = ["EvalLogHooks", "StepResult"]


@dataclass
class StepResult:
    """What a training step hands to the hooks (no images when it was skipped)."""

    metrics: dict[str, float]
    skipped: bool
    images: torch.Tensor | None = None
    references: References | None = None


class EvalLogHooks:
    """Evaluation, logging, image grids and interval checkpoints of a run."""

    cfg: TrainConfig
    policy: Policy
    rewards: RewardSet
    state: TrainState
    dist: Dist
    run_dir: Path
    eval_pairs: EvalPairs | None
    evaluator: Evaluator | None  # base and final: data.eval_noises per pair
    mid_evaluator: Evaluator | None  # every run.eval_every steps: the first
    _eval_summary: dict[str, Any] | None = None  # eval.json so far (the progress plot's)

    def ema_swapped(self) -> contextlib.AbstractContextManager[Any]:
        """Within the block the policy holds the EMA weights (no-op without EMA)."""
        return self.state.ema.swapped() if self.state.ema else contextlib.nullcontext()

    def evaluate(self, grid: Path | None = None, mid_run: bool = False) -> dict[str, Any]:
        """Held-out evaluation of the current weights (EMA when on); with ``grid`` the
        first draw of up to 8 subjects x 8 prompts is saved there (main process).
        ``mid_run``: only the first of each pair's draws (cheaper; the same images)."""
        ev = self.mid_evaluator if mid_run else self.evaluator
        assert ev is not None and self.eval_pairs is not None
        items, width = grid_items(self.eval_pairs, ev.k)
        with self.ema_swapped(), interruptible():  # a stop signal abandons an evaluation
            res = ev.run(self.policy, keep=items if grid else ())
        if grid is not None and self.dist.is_main and items:
            refs = self.eval_pairs.references[[j // ev.k for j in items]]
            save_grid(
                grid, reward_view(refs), torch.stack([res.kept[j] for j in items]), group_size=width
            )
        return res.summary()

    def _begin_summary(self, resume: bool) -> dict[str, Any]:
        """``eval.json`` so far (on resume), with the ground truth's scores and the base
        policy's evaluation added when missing."""
        path = self.run_dir / "eval.json"
        summary: dict[str, Any] = json.loads(path.read_text()) if resume and path.exists() else {}
        if self.evaluator is not None and "truth" not in summary:
            truth = self.evaluator.truth_summary()  # it does not change: scored once
            if truth is not None:
                summary["truth"] = truth
        if self.evaluator is not None and "base" not in summary:
            self._evaluate_into(summary, "base")
        self._eval_summary = summary
        return summary

    def _after_step(self, res: StepResult, log: MetricsLog, skips: int) -> None:
        """Evaluate, log and write images, as the run's intervals say."""
        cfg, step = self.cfg.run, self.state.step
        row: dict[str, float] = {"step": float(step), **res.metrics}
        row.update(skips=float(skips), total_skips=float(self.state.total_skips))
        evaluated = self.evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0
        if evaluated:
            ev = self.evaluate(mid_run=True)
            row.update({f"eval/{k}": v for k, v in ev["overall"].items()})
        if evaluated or step % cfg.log_every == 0 or step == cfg.steps:
            log.log(row)
        if evaluated:
            self._plot_progress(log)
        if self.dist.is_main and cfg.image_every and (step % cfg.image_every == 0 or step == 1):
            path = self.run_dir / "images" / f"step_{step:06d}.png"
            grid = save_grid(
                path, reward_view(res.references), res.images, group_size=self.cfg.grpo.group_size
            )
            log.image("train/samples", grid, step)  # TensorBoard / W&B images too

    def _end_summary(self, summary: dict[str, Any], log: MetricsLog) -> None:
        """The reward curves, and the trained policy's evaluation into ``summary``."""
        if self.dist.is_main:
            plot_curves(log.rows, self.run_dir / "reward_curves.png", self.rewards.names)
        if self.evaluator is not None:
            summary["steps"] = self.state.step
            summary["train_seconds"] = self.state.train_seconds
            self._evaluate_into(summary, "trained")
            self._plot_progress(log)

    def _plot_progress(self, log: MetricsLog) -> None:
        """``progress.png`` from the mid-run rows and ``eval.json`` so far (main process)."""
        summary = self._eval_summary
        if not self.dist.is_main or summary is None or "base" not in summary:
            return
        gaps: dict[str, float] = {}
        if "trained" in summary and "truth" in summary:
            closed = gap_closed(summary["trained"], summary["base"], summary["truth"])
            gaps = {n: g for n, (g, _) in closed.items()}
        series = progress_series(log.rows, summary, self.rewards.names, gaps=gaps)
        plot_progress(self.run_dir / "progress.png", series)

    def _evaluate_into(self, summary: dict[str, Any], key: str) -> None:
        summary[key] = self.evaluate(self.run_dir / "images" / f"eval_{key}.png")
        if self.dist.is_main:
            text = json.dumps(summary, indent=2)
            atomic_write(self.run_dir / "eval.json", lambda tmp: tmp.write_text(text))
