"""Command line: ``cgrpo train | pretrain | sample | eval | compare``.

Every command takes ``key=value`` overrides of its typed config (``section.key=value``
for nested keys); ``--help`` lists every key with its default, unit and meaning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cgrpo.config.core import ConfigError, describe_config, load_config


def _parser(name: str, help_text: str, config_cls: type, sub: argparse._SubParsersAction):
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override with key=value):\n" + describe_config(config_cls),
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    from cgrpo.eval.protocol import EvalConfig
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
    from cgrpo.world.pretrain import PretrainConfig

    ap = argparse.ArgumentParser(
        prog="cgrpo",
        description="Customized-GRPO: RL fine-tuning of subject-driven image generators.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    tp = _parser(
        "train",
        "Train with Customized-GRPO (GRPO + SARS + TDW). With no --config: the embedded "
        "CPU world (cgrpo/configs/embedded.yaml).",
        TrainConfig,
        sub,
    )
    tp.add_argument("--config", type=Path, default=None, help="YAML config file")
    tp.add_argument("--resume", action="store_true", help="continue the run in run.out_dir")
    tp.add_argument("--quiet", action="store_true", help="no progress bar")
    _parser(
        "pretrain", "Pretrain the embedded base generator (flow matching).", PretrainConfig, sub
    )
    sp = sub.add_parser(
        "sample",
        help="Images for given references + prompts from a run or the base model.",
        description="Generate images with the embedded generator (base weights or a run's "
        "latest checkpoint: its EMA weights when it has them, sampled with the run's sampler "
        "settings). A reference is an embedded subject name (colour-pattern-shape, e.g. "
        "red-hstripes-circle) or an image file.",
    )
    sp.add_argument("--run", type=Path, default=None, help="run folder (its latest checkpoint)")
    sp.add_argument("--weights", type=Path, default=None, help="generator safetensors")
    sp.add_argument("--reference", required=True, help="subject name or image path")
    sp.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    sp.add_argument("--num", type=int, default=4, help="images per prompt (default 4)")
    sp.add_argument(
        "--steps",
        type=int,
        default=0,
        help="sampling steps (default: as the run evaluates: run.eval_steps or sampler.num_steps)",
    )
    sp.add_argument(
        "--raw", action="store_true", help="the checkpoint's raw weights instead of its EMA"
    )
    sp.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    sp.add_argument("--out", type=Path, default=Path("samples.png"), help="output PNG grid")

    ep = _parser(
        "eval",
        "Evaluate a run (its latest checkpoint) or a base model on a benchmark protocol: "
        "DreamBench (30 subjects x 25 prompts) or the embedded held-out subjects. Resumable; "
        "writes images, metrics.csv/json, per_subject.md and grid.png into out_dir.",
        EvalConfig,
        sub,
    )
    ep.add_argument("--run", type=Path, default=None, help="cgrpo train run folder")
    ep.add_argument("--config", type=Path, default=None, help="eval config YAML (keys below)")
    ep.add_argument(
        "--model-config",
        type=Path,
        default=None,
        help="train config YAML of the model to evaluate when no --run (its base model; "
        "default: the embedded world)",
    )
    ep.add_argument("--quiet", action="store_true", help="no progress bar")
    cp = sub.add_parser(
        "compare",
        help="Table and identity-vs-prompt scatter of several runs.",
        description="Compare cgrpo train run folders and/or cgrpo eval folders: a table and "
        "the paper's scatter (identity x, prompt following y, base marked).",
    )
    cp.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run or eval folders")
    cp.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")

    # key=value overrides may come before and after flags (`run.steps=5 --quiet run.seed=2`)
    args, extra = ap.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            ap.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        if args.command == "train":
            from cgrpo.eval.summary import summary_table
            from cgrpo.train.preemption import PREEMPTED_EXIT_CODE, Preempted
            from cgrpo.train.trainer import GRPOTrainer

            path = args.config if args.config is not None else EMBEDDED_CONFIG
            cfg = load_config(TrainConfig, path, args.overrides)
            try:
                summary = GRPOTrainer(cfg).train(resume=args.resume, quiet=args.quiet)
            except Preempted as e:
                print(f"cgrpo train: {e}", file=sys.stderr)
                return PREEMPTED_EXIT_CODE
            print(summary_table(summary.get("base"), summary.get("trained"), "trained",
                                summary.get("truth")))  # fmt: skip
            print(f"run folder: {cfg.run.out_dir}")
        elif args.command == "pretrain":
            from cgrpo.world.pretrain import pretrain

            cfg = load_config(PretrainConfig, None, args.overrides)
            print(f"wrote {pretrain(cfg)}")
        elif args.command == "sample":
            from cgrpo.eval.sample import sample_command

            sample_command(args)
        elif args.command == "eval":
            from cgrpo.eval.protocol import eval_command

            cfg = load_config(EvalConfig, args.config, args.overrides)
            print(eval_command(cfg, args.run, args.model_config, args.quiet))
            print(f"wrote {cfg.out_dir}")
        elif args.command == "compare":
            from cgrpo.eval.compare import compare_command

            print(compare_command(args.runs, args.out))
            print(f"wrote {args.out / 'compare.md'} and {args.out / 'compare.png'}")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"cgrpo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
