"""The steps of a competitive-degradation sweep: one run trained and evaluated (in its own
process), the one base evaluation every run is paired with, the budget test's longer
evaluation, the reference scores of pasting the reference, and the checks that refuse a
run folder of other settings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cgrpo.experiments.config_diff import config_changes, saved_config
from cgrpo.experiments.degradation import DEFAULT_ARM, Settings, final_pairs, run_config
from cgrpo.experiments.degradation_records import keep_records
from cgrpo.experiments.run_folders import done, set_aside, trained
from cgrpo.experiments.sweep import run_logged

__all__ = [
    "base_eval",
    "budget_eval",
    "check_config",
    "copy_scores",
    "launch",
    "train_and_eval",
]


def train_and_eval(settings: Settings, arm: str, seed: int) -> None:
    """One run, in its own process: train (resuming from its last checkpoint), then the
    precise end point (``cgrpo eval``, ``eval_final/``)."""
    from cgrpo.eval.protocol import eval_command
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.train.trainer import GRPOTrainer

    run_dir = settings.run_dir(arm, seed)
    if not trained(run_dir, settings.steps):
        resume = ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
        GRPOTrainer(run_config(settings, arm, seed)).train(resume=resume, quiet=True)
    set_aside(run_dir / "eval_final", settings.steps)
    cfg = settings.eval_config(run_dir / "eval_final", settings.eval_images)
    eval_command(cfg, run_dir, None, quiet=True)


def base_eval(settings: Settings) -> Path:
    """One evaluation of the starting model (and the ground truth) shared by every run, in
    ``out/base_eval``; its ``metrics.json``. ``SystemExit`` for one of other settings or
    size than ``settings``'."""
    from cgrpo.config.core import save_config
    from cgrpo.eval.protocol import eval_command

    base_dir = settings.out / "base_eval"
    model = run_config(settings, DEFAULT_ARM, 0, run_dir=base_dir)  # (a bad override stops here)
    pairs = final_pairs(model, settings.eval_prompts)
    if not (base_dir / "metrics.json").is_file():
        base_dir.mkdir(parents=True, exist_ok=True)
        save_config(model, base_dir / "model.yaml")
        cfg = settings.eval_config(base_dir, settings.eval_images)
        eval_command(cfg, None, base_dir / "model.yaml", quiet=True)
    keys = config_changes(saved_config(base_dir / "model.yaml"), model, ("run.",))  # (runs')
    if keys:
        raise SystemExit(
            f"{base_dir} evaluated a base of other settings ({', '.join(keys)} differ): use "
            "another --out, or the overrides the sweep was run with"
        )
    made = json.loads((base_dir / "metrics.json").read_text())
    if (made["pairs"], made["images_per_pair"]) != (pairs, settings.eval_images):
        raise SystemExit(
            f"{base_dir} evaluated {made['pairs']} pairs x {made['images_per_pair']} noises, "
            f"this command asks for {pairs} x {settings.eval_images} (--eval-prompts, "
            "--eval-images): use another --out, or the options the sweep was run with"
        )
    return base_dir / "metrics.json"


def budget_eval(settings: Settings, run_dir: Path | None) -> Path:
    """The budget test's evaluation on ``budget_images`` noises per pair of a run of the
    default arm (``run_dir``) or of the base (None), in ``eval_budget/``; the draws the
    final evaluation made (the same seeds) are linked, not drawn again."""
    from cgrpo.eval.protocol import eval_command

    base_dir = settings.out / "base_eval"
    src = (run_dir / "eval_final") if run_dir else base_dir
    out = (run_dir / "eval_budget") if run_dir else (base_dir / "budget")
    if run_dir:
        set_aside(out, settings.steps)
    if not (out / "metrics.json").is_file():
        if not (out / "images").exists():  # the draws' source (model, checkpoint) goes first
            if not (src / "images").is_dir():  # (a record keeps no image)
                raise SystemExit(
                    f"{src} has no images to extend to --budget-images {settings.budget_images} "
                    "(a run restored from --records): pass --budget-images 0, the budget "
                    "test then reads the final evaluation"
                )
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / "source.json", out / "source.json")
            shutil.copytree(src / "images", out / "images", copy_function=os.link)
        cfg = settings.eval_config(out, settings.budget_images)
        if run_dir:
            eval_command(cfg, run_dir, None, quiet=True)
        else:
            eval_command(cfg, None, base_dir / "model.yaml", quiet=True)
    return out / "metrics.json"


def copy_scores(settings: Settings) -> dict[str, float]:
    """What pasting the reference scores: each held-out pair's reference taken as its
    generated image, scored by the run's rewards (the paper: DINO 1.0, prompt 0.50); kept in
    ``out/base_eval/copy.json``."""
    import torch

    from cgrpo.eval.evaluator import eval_pairs_of
    from cgrpo.run.build import build_data, build_rewards

    path = settings.out / "base_eval" / "copy.json"
    if path.is_file():
        return json.loads(path.read_text())
    cfg = run_config(settings, DEFAULT_ARM, 0, run_dir=settings.out / "base_eval")
    pairs, rewards = eval_pairs_of(build_data(cfg)), build_rewards(cfg, "cpu")
    scores: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(pairs), 64):
        refs = pairs.references[i : i + 64]
        for k, v in rewards.score(refs, pairs.prompts[i : i + 64], refs).items():
            scores.setdefault(k, []).append(v)
    out = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
    path.write_text(json.dumps(out))
    return out


def check_config(settings: Settings, arm: str, seed: int, *, run_dir: Path | None = None) -> None:
    """Refuse (``SystemExit``) to skip, resume or report a run folder (default
    :meth:`Settings.run_dir`) trained with other settings (another ``--steps``,
    ``--eval-every`` or override): its figures would not be this command's. A shorter run
    is not refused: it is continued."""
    run_dir = run_dir or settings.run_dir(arm, seed)
    if not (run_dir / "config.yaml").is_file():
        return
    old = saved_config(run_dir / "config.yaml")
    keys = config_changes(old, run_config(settings, arm, seed, run_dir=run_dir))
    # a shorter run is continued: lr is constant and the checkpoint holds every RNG state,
    # so steps beyond it are the ones a run started with the longer budget trains
    longer = old.run.steps < settings.steps and set(keys) <= {"run.steps", "run.image_every"}
    if keys and not longer:
        raise SystemExit(
            f"{run_dir} was trained with other settings ({', '.join(keys)} differ): use "
            "another --out, or the options it was run with (a larger --steps continues it)"
        )


def launch(settings: Settings, arm: str, seed: int, *, command: list[str]) -> None:
    """Train and evaluate one run by ``command`` (a process running :func:`train_and_eval`
    of it, one thread), logging to ``train.log``; with ``records``, keep the finished run's
    record. A finished run is skipped; a restored record, without checkpoints, is refused
    a longer budget; a run stopped before its first checkpoint starts again."""
    from cgrpo.io.checkpoint import latest_checkpoint

    run_dir = settings.run_dir(arm, seed)
    check_config(settings, arm, seed)
    if done(run_dir, settings.steps):
        print(f"[skip] {arm} seed {seed} (finished)", flush=True)
        return
    restored = (run_dir / "eval_final" / "metrics.json").is_file()  # (a run stopped before
    # its first checkpoint has only the step-0 eval.json: it starts again from the base)
    if restored and latest_checkpoint(run_dir / "checkpoints") is None:
        raise SystemExit(  # a record restored on this machine: its figures, no checkpoint
            f"{run_dir} holds a finished run's record without checkpoints, so it cannot be "
            "continued to more steps: use another --out for the longer budget"
        )
    run_logged(command, run_dir, f"{arm} seed {seed}")
    keep_records(settings)
