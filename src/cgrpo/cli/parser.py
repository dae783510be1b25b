"""The ``cgrpo`` argument parser: one sub-command per job, each with its flags; a command
with a typed config (train, pretrain, eval) takes ``key=value`` overrides, and its
``--help`` lists every key (built only when asked, so parsing imports no other command's
config)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from cgrpo.config.docs import describe_config
from cgrpo.config.registry import import_path

__all__ = ["CONFIG_CLASSES", "build_parser"]

#: The config class of each command that has one, as "module:name" (imported on use).
CONFIG_CLASSES = {
    "train": "cgrpo.run.config:TrainConfig",
    "pretrain": "cgrpo.world.pretrain:PretrainConfig",
    "eval": "cgrpo.eval.config:EvalConfig",
}


def _config_class(command: str) -> type:
    return import_path(CONFIG_CLASSES[command])


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, as every other error of cgrpo:
    ``<prog>: error: <what>; see <prog> --help`` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


class _CommandParser(_Parser):
    """A sub-command's parser whose epilog (every config key) is built only for ``--help``,
    so that parsing a command never imports another command's config."""

    def __init__(self, *args: Any, config_of: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_of = config_of

    def format_help(self) -> str:
        if self.config_of is not None and self.epilog is None:
            keys = describe_config(_config_class(self.config_of))
            self.epilog = "config keys (override with key=value):\n" + keys
        return super().format_help()


def _command(sub: argparse._SubParsersAction, name: str, help_text: str, **kw: Any) -> Any:
    p = sub.add_parser(
        name,
        help=kw.pop("summary", help_text),
        description=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        config_of=name if name in CONFIG_CLASSES else None,
    )
    if name in CONFIG_CLASSES:
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def _add_train_and_pretrain(sub: argparse._SubParsersAction) -> None:
    tp = _command(
        sub,
        "train",
        "Train with Customized-GRPO (GRPO + SARS + TDW). With no --config: the embedded "
        "CPU world (cgrpo/configs/embedded.yaml).",
    )
    tp.add_argument("--config", type=Path, default=None, help="YAML config file")
    tp.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH_OR_STEP",
        help="continue the run in run.out_dir from its latest checkpoint; --resume N: from "
        "its step N; --resume PATH: from that checkpoint folder",
    )
    tp.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: go on although settings that change what a step is (group size, "
        "sampler, method, rewards, optimizer, model, data, seed) differ from the checkpoint's",
    )
    tp.add_argument("--quiet", action="store_true", help="no progress bar")
    _command(sub, "pretrain", "Pretrain the embedded base generator (flow matching).")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    sp = _command(
        sub,
        "sample",
        "Generate images with the embedded generator (base weights or a run's latest "
        "checkpoint) or a FLUX run's trained model (its checkpoint on its flux.path): the "
        "checkpoint's EMA weights when it has them, sampled with the run's sampler settings. "
        "A reference is an embedded subject name (colour-pattern-shape, e.g. "
        "red-hstripes-circle) or an image file; a FLUX run takes image files, prepared as "
        "its training prepared them (several: UNO's multi-subject generation).",
        summary="Images for given references + prompts from a run or the base model.",
    )
    sp.add_argument("--run", type=Path, default=None, help="run folder (its latest checkpoint)")
    sp.add_argument("--step", type=int, default=None, help="the run's checkpoint of step N")
    sp.add_argument("--weights", type=Path, default=None, help="embedded generator safetensors")
    sp.add_argument(
        "--reference",
        action="append",
        required=True,
        help="subject name or image path (repeatable for UNO's several references)",
    )
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


def _add_export(sub: argparse._SubParsersAction) -> None:
    xp = _command(
        sub,
        "export",
        "Write a FLUX run's trained LoRA (its latest checkpoint's EMA weights, or --step N's, "
        "--raw for the raw ones) as one safetensors file, and its model card (README.md "
        "beside it). --format diffusers: FluxPipeline / FluxKontextPipeline.load_lora_weights "
        "loads it at the trained scale; --format uno: bytedance/UNO's LoRA keys, the run's "
        "UNO starting LoRA (flux.start_lora) included, for UNO's own loader.",
        summary="A FLUX run's LoRA as diffusers or UNO safetensors + model card.",
    )
    xp.add_argument("--run", type=Path, required=True, help="cgrpo train run folder (FLUX)")
    xp.add_argument("--step", type=int, default=None, help="its checkpoint of step N")
    xp.add_argument("--format", choices=["diffusers", "uno"], default="diffusers", dest="fmt")
    xp.add_argument("--raw", action="store_true", help="raw weights instead of the EMA ones")
    xp.add_argument("--base-model", default=None, help="Hub id for the card (default: by model)")
    xp.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")


def _add_setup(sub: argparse._SubParsersAction) -> None:
    sp = _command(
        sub,
        "setup",
        "Make the environment a reward needs. hpsv3: a virtualenv for the HPS-v3 worker "
        "(its package pins transformers 4.45.2, which this project's cannot share): creates "
        "--venv, pip-installs hpsv3 there, checks that it imports, writes its model config "
        "pointing at the local Qwen2-VL-7B-Instruct folder (--qwen), and prints the reward "
        "options that use them.",
        summary="The HPS-v3 worker's virtualenv, in one command.",
    )
    sp.add_argument("what", choices=["hpsv3"], help="what to set up")
    sp.add_argument("--venv", type=Path, required=True, help="the virtualenv folder to make")
    sp.add_argument("--qwen", type=Path, default=None, help="local Qwen2-VL-7B-Instruct folder")
    sp.add_argument("--package", default="hpsv3", help="pip requirement (default hpsv3)")
    sp.add_argument(
        "--pip-arg", action="append", default=[], help="extra pip argument (repeatable)"
    )


def _add_serve_reward(sub: argparse._SubParsersAction) -> None:
    rp = _command(
        sub,
        "serve-reward",
        "Serve reward models over HTTP (the http reward kind scores through it; "
        "docs/rewards.md): the rewards: section of --config (any kinds, each on its own "
        "device), GET /health and POST /score, one request at a time per reward model.",
        summary="Reward models on their own GPU(s), behind an HTTP server.",
    )
    rp.add_argument("--config", type=Path, required=True, help="YAML file with a rewards: section")
    rp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rp.add_argument("--port", type=int, default=8600, help="port to listen on (default 8600)")
    rp.add_argument("--verbose", action="store_true", help="log every request on stderr")


def _add_eval_and_compare(sub: argparse._SubParsersAction) -> None:
    ep = _command(
        sub,
        "eval",
        "Evaluate a run (its latest checkpoint) or a base model on a benchmark protocol: "
        "DreamBench (30 subjects x 25 prompts) or the embedded held-out subjects. Resumable; "
        "writes images, metrics.csv/json, per_subject.md and grid.png into out_dir.",
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
    cp = _command(
        sub,
        "compare",
        "Compare cgrpo train run folders and/or cgrpo eval folders: a table and the paper's "
        "scatter (identity x, prompt following y, base marked).",
        summary="Table and identity-vs-prompt scatter of several runs.",
    )
    cp.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run or eval folders")
    cp.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")


def build_parser() -> argparse.ArgumentParser:
    """The ``cgrpo`` parser: one sub-command each for train, pretrain, sample, export, eval,
    compare."""
    ap = _Parser(
        prog="cgrpo",
        description="Customized-GRPO: RL fine-tuning of subject-driven image generators.",
    )
    ap.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of every error (also CGRPO_DEBUG=1); by default an expected "
        "error is one line and its exit code (README: Exit codes)",
    )
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    _add_train_and_pretrain(sub)
    _add_sample(sub)
    _add_export(sub)
    _add_setup(sub)
    _add_serve_reward(sub)
    _add_eval_and_compare(sub)
    return ap
