"""What each ``cgrpo`` sub-command runs, given its parsed arguments: each returns the
process's exit code (0 when done) and raises for a bad input (turned into one line by
:mod:`cgrpo.cli.exit_codes`). Each command's modules are imported only when it runs."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from pathlib import Path

from cgrpo.config.core import load_config

__all__ = ["COMMANDS"]


def _train(args: argparse.Namespace) -> int:
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    path = args.config if args.config is not None else EMBEDDED_CONFIG
    resume = args.resume
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():
        args.overrides.insert(0, resume)  # `--resume key=value`: an override, not a path
        resume = True
    cfg = load_config(TrainConfig, path, args.overrides)  # checked before torch loads
    from cgrpo.eval.summary import summary_table
    from cgrpo.train.checkpointing import resume_checkpoint
    from cgrpo.train.resume_settings import check_resume_settings
    from cgrpo.train.trainer import GRPOTrainer

    if resume:  # a missing checkpoint, or one of other settings, stops here, before any load
        resume = resume_checkpoint(resume, cfg.run.out_dir)
        check_resume_settings(resume, cfg, allow_changes=args.allow_changes)
    # Preempted (exit 75) and ProcessFailed (the same line on every process, exit 1) are
    # turned into their line by cgrpo.cli.exit_codes
    summary = GRPOTrainer(cfg).train(
        resume=resume, quiet=args.quiet, allow_changes=args.allow_changes
    )
    base, trained, truth = (summary.get(k) for k in ("base", "trained", "truth"))
    print(summary_table(base, trained, "trained", truth=truth))
    print(f"run folder: {cfg.run.out_dir}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from cgrpo.world.pretrain import PretrainConfig, pretrain

    print(f"wrote {pretrain(load_config(PretrainConfig, None, args.overrides))}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from cgrpo.eval.sample import sample_command

    sample_command(args)
    return 0


def _export(args: argparse.Namespace) -> int:
    import shlex

    from cgrpo.eval.export import export_lora

    words = ["cgrpo", "export", "--run", str(args.run), "--format", args.fmt]
    words += ["--step", str(args.step)] if args.step is not None else []
    words += ["--raw"] if args.raw else []
    words += ["--base-model", args.base_model] if args.base_model else []
    words += ["--out", str(args.out)]
    lora, card = export_lora(
        args.run, args.out, step=args.step, fmt=args.fmt, ema=not args.raw,
        command=shlex.join(words), base_model=args.base_model,
    )  # fmt: skip
    print(f"wrote {lora} and its model card {card}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from cgrpo.eval.config import EvalConfig

    cfg = load_config(EvalConfig, args.config, args.overrides)
    from cgrpo.eval.protocol import eval_command

    print(eval_command(cfg, args.run, args.model_config, quiet=args.quiet))
    print(f"wrote {cfg.out_dir}")
    return 0


def _setup(args: argparse.Namespace) -> int:
    from cgrpo.rewards.hpsv3_setup import setup_hpsv3

    lines = setup_hpsv3(
        args.venv, qwen=args.qwen, package=args.package, pip_args=tuple(args.pip_arg)
    )
    print(f"HPS-v3 worker ready in {args.venv}; use it in a config as:")
    print("  prompt: {kind: hpsv3, checkpoint_path: <HPSv3.safetensors>, " + ", ".join(lines) + "}")
    return 0


def _serve_reward(args: argparse.Namespace) -> int:
    from cgrpo.rewards.server import serve

    serve(args.config, args.host, args.port, verbose=args.verbose)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from cgrpo.eval.compare import compare_command

    print(compare_command(args.runs, args.out))
    print(f"wrote {args.out / 'compare.md'} and {args.out / 'compare.png'}")
    return 0


def _stoppable(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """``command`` answering SIGTERM / SIGUSR1 / Ctrl-C from its first second
    (:class:`~cgrpo.train.preemption.Preemption`): before training begins, or in
    ``cgrpo eval``, the work in flight is abandoned at once (exit 75: nothing half-written
    is kept; ``cgrpo eval`` continues from the images it wrote); the trainer itself
    checkpoints first."""

    def run(args: argparse.Namespace) -> int:
        from cgrpo.io.interrupts import StopRequested, interruptible
        from cgrpo.train.preemption import Preemption

        try:
            with Preemption(), interruptible():
                return command(args)
        except StopRequested as stop:
            name = signal.Signals(stop.signum).name
            stop.args = (
                f"stopped on {name} before anything was saved; run the same command again",
            )
            raise

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _stoppable(_train),
    "pretrain": _pretrain,
    "sample": _sample,
    "export": _export,
    "setup": _setup,
    "serve-reward": _serve_reward,
    "eval": _stoppable(_eval),
    "compare": _compare,
}
