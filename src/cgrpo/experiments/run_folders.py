"""The state of a sweep's run folders (``out/<arm>/seed<k>``): trained to which step, the
final evaluation of which checkpoint, which runs finished at a budget; an evaluation of an
earlier checkpoint set aside when a run is continued."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["done", "evaluated_step", "finished_steps", "runs_at", "set_aside", "trained"]


def trained(run_dir: Path, steps: int) -> bool:
    """Whether the run's ``eval.json`` holds its trained figures after ``steps`` steps."""
    ev = run_dir / "eval.json"
    summary = json.loads(ev.read_text()) if ev.is_file() else {}
    return "trained" in summary and summary.get("steps") == steps


def evaluated_step(out: Path, record: str = "metrics.json") -> int | None:
    """The training step of the checkpoint ``out`` (an evaluation folder) evaluated, as its
    ``record`` names it (``source.json`` is written before the first image, metrics.json
    last); None when there is none."""
    from cgrpo.io.checkpoint import checkpoint_step

    path = out / record
    if not path.is_file():
        return None
    return checkpoint_step(json.loads(path.read_text()).get("checkpoint") or "")


def done(run_dir: Path, steps: int) -> bool:
    """Whether the run's final evaluation (``eval_final/``) is of its step ``steps``."""
    return evaluated_step(run_dir / "eval_final") == steps


def set_aside(out: Path, steps: int) -> None:
    """An evaluation folder of an earlier step (a run since continued to ``steps``) is kept
    as ``<out>_step<N>``; its images are not mixed with the new checkpoint's."""
    step = evaluated_step(out, "source.json")  # (also of an evaluation stopped part-way)
    if step is not None and step != steps:
        kept = out.with_name(f"{out.name}_step{step:06d}")
        if kept.exists():
            raise SystemExit(f"{out} is of step {step}, and {kept} exists: remove one of them")
        out.rename(kept)


def finished_steps(out: Path) -> dict[Path, int | None]:
    """Every run folder of a sweep (``out/<arm>/seed<k>``) and the step its final
    evaluation is of (None: not evaluated)."""
    return {d: evaluated_step(d / "eval_final") for d in sorted(out.glob("*/seed*"))}


def runs_at(finished: dict[Path, int | None], arm: str, steps: int) -> dict[int, Path]:
    """Seed -> run folder of ``arm``'s runs finished at ``steps`` (of :func:`finished_steps`)."""
    return {
        int(d.name[4:]): d for d, step in finished.items() if d.parent.name == arm and step == steps
    }
