"""The user-level sweep of issue 27: malformed inputs given to ``cgrpo`` as a user gives
them, each answered by one line and an exit code, with nothing left behind.

Every case of :data:`CASES` writes its inputs into its own folder (the working folder of
the command too, so a default output path would land there), runs ``cgrpo <command>``
in-process (an unexpected exception fails the test with its traceback) and asserts:

- the exit code (2 bad input, 3 device or resource, 4 reward server or judge; README
  "Exit codes");
- stderr is exactly one line, ``cgrpo <command>: error: ...``, shorter than 1000 characters,
  naming the key, file or value (and the fix where the message has one): the needles;
- no file or folder was created besides the inputs the case wrote (``cgrpo train``'s
  ``run.out_dir`` included).

:data:`SUBPROCESS` runs a few of them through ``python -m cgrpo`` as a real process: no
"Traceback" on stdout or stderr and the same single line. Stop signals (Ctrl-C, SIGTERM,
SIGUSR1: a resumable checkpoint, exit 75 / 130) are swept in tests/train/test_stop_signals.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from cgrpo.cli import main
from tests.io.crafted_png import write_bomb_png
from tests.io.test_image_checks import write_truncated_jpeg

PROMPT = "a circle on a sky background"
SUBJECT = "red-hstripes-circle"
LATIN1_PAIR = '{"reference": "a.png", "prompt": "caf\xe9"}\n'.encode("latin-1")
BIG = "x" * 1_000_000  # a 1 MB value: must be quoted cut short
LAUGHS = "\n".join(
    ["a: &a [" + ", ".join(['"lol"'] * 10) + "]"]
    + [
        f"{c}: &{c} [" + ", ".join([f"*{p}"] * 10) + "]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)  # nine levels of ten aliases: 10**9 strings once expanded


# ------------------------------------------------------------------------------ inputs


class Ctx:
    """A case's folder and the helpers that write its inputs there."""

    def __init__(self, tmp: Path, weights: Path, trained: Path) -> None:
        self.tmp, self.weights, self._trained = tmp, weights, trained
        self.port = free_port()  # for a server that is not there

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write(self, name: str, data: str | bytes) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
        return p

    def folder(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def image(self, name: str = "ref.png", colour: str = "red") -> Path:
        p = self.tmp / name
        Image.new("RGB", (32, 24), colour).save(p)
        return p

    def pairs(self, rows: Sequence[dict | str], name: str = "pairs.jsonl") -> Path:
        """A pairs file of ``rows`` (a dict is one JSON line, a str is written as is)."""
        lines = (r if isinstance(r, str) else json.dumps(r) for r in rows)
        return self.write(name, "\n".join(lines) + "\n")

    def run(self) -> Path:
        """A copy of the module's trained run (1 step, a checkpoint of step 1)."""
        dst = self.tmp / "trained"
        if not dst.exists():
            shutil.copytree(self._trained, dst)
        return dst

    def ckpt(self, name: str = "") -> Path:
        """The copied run's checkpoint folder of step 1 (or a file in it)."""
        folder = self.run() / "checkpoints" / "step_000001"
        return folder / name if name else folder

    def train(self, *overrides: str, out: Path | None = None) -> list[str]:
        """``cgrpo train`` on the tiny model, seconds per step, then ``overrides``."""
        return [
            "train", f"model.weights={self.weights}",
            f"run.out_dir={out if out is not None else self.tmp / 'out'}", "run.threads=1",
            "data.prompts_per_step=2", "grpo.group_size=4", "sampler.num_steps=3",
            "run.steps=1", "run.eval=false", "run.log_with=[]", "--quiet", *overrides,
        ]  # fmt: skip

    def jsonl(self, rows: Sequence[dict | str] | None = None, *more: str) -> list[str]:
        """``cgrpo train`` on a pairs file of ``rows`` (default: one good pair)."""
        if rows is None:
            self.image()
            rows = [{"reference": "ref.png", "prompt": PROMPT}]
        path = self.pairs(rows)
        return self.train("data.kind=jsonl", f"data.path={path}", "data.allow_eval_overlap=true",
                          *more)  # fmt: skip

    def resume(self, *more: str, at: Path | None = None) -> list[str]:
        """``cgrpo train --resume [at]`` of the copied run, one step further."""
        where = [str(at)] if at is not None else []
        return self.train("run.steps=2", *more, "--resume", *where, out=self.run())

    def corrupt(
        self, name: str, data: bytes | Callable[[bytes], bytes], *, sizes: bool = False
    ) -> Path:
        """The copied checkpoint's ``name`` overwritten with ``data`` (or ``data(old)``);
        ``sizes``: its size in meta.json too (tampered past the completeness check)."""
        p = self.ckpt(name)
        p.write_bytes(data(p.read_bytes()) if callable(data) else data)
        if sizes:
            meta_path = self.ckpt("meta.json")
            meta = json.loads(meta_path.read_text())
            meta["file_sizes"][name] = p.stat().st_size
            meta_path.write_text(json.dumps(meta))
        return p

    def state(self, obj: object) -> Path:
        """The copied checkpoint's state.pt replaced by ``obj`` (or ``obj(state)``), its
        size in meta.json too."""
        if callable(obj):
            obj = obj(torch.load(self.ckpt("state.pt"), weights_only=True))
        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.corrupt("state.pt", buf.getvalue(), sizes=True)

    def flux_run(self) -> Path:
        """The copied run made a FLUX run's folder (its config says model.kind=flux)."""
        run = self.run()
        cfg = (run / "config.yaml").read_text()
        (run / "config.yaml").write_text(cfg.replace("kind: embedded\n", "kind: flux\n", 1))
        return run


def then(*steps: Any) -> Any:
    """The last of ``steps``: a case's argv after the steps that wrote its inputs."""
    return steps[-1]


def free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def garbage(size: int = 4096) -> bytes:
    return bytes((i * 131 + 7) % 256 for i in range(size))


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def without(key: str) -> Callable[[dict], dict]:
    return lambda state: {k: v for k, v in state.items() if k != key}


def same_size_garbage(data: bytes) -> bytes:
    return b"\xff" * len(data)  # same size: passes the completeness check


@dataclass(frozen=True)
class Case:
    """``build(ctx)`` writes the inputs and returns the argv; the one error line must hold
    every needle (``{tmp}`` is the case's folder, ``{run}`` the copied run)."""

    id: str
    build: Callable[[Ctx], list[str]]
    code: int
    needles: tuple[str, ...]


def case(name: str, build: Callable[[Ctx], list[str]], code: int, *needles: str, xfail: str = ""):
    """A :class:`Case` as a pytest param (``xfail``: the reason it fails for now)."""
    c = Case(name, build, code, needles)
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(c, id=name, marks=marks)


# ------------------------------------------------------------------------------- cases

CONFIG = [
    case("unknown-key", lambda c: c.train("bogus=1"), 2, "'bogus'", "Valid keys"),
    case("misspelt-nested-key", lambda c: c.train("run.stpes=3"), 2, "'run.stpes'",
         "Did you mean 'run.steps'"),
    case("misspelt-section", lambda c: c.train("rnu.steps=3"), 2, "'rnu'", "Did you mean 'run'"),
    case("ill-typed-int", lambda c: c.train("run.steps=abc"), 2, "run.steps", "abc"),
    case("ill-typed-bool", lambda c: c.train("run.eval=maybe"), 2, "run.eval", "maybe"),
    case("ill-typed-section", lambda c: c.train("run=5"), 2, "'run'", "RunConfig", "mapping"),
    case("literal-not-allowed", lambda c: c.train("model.kind=sd3"), 2, "model.kind", "sd3"),
    case("steps-negative", lambda c: c.train("run.steps=-1"), 2, "run.steps", ">= 0", "-1"),
    case("checkpoint-every-negative", lambda c: c.train("run.checkpoint_every=-5"), 2,
         "run.checkpoint_every", "-5"),
    case("eval-every-negative", lambda c: c.train("run.eval_every=-1"), 2, "run.eval_every",
         ">= 0"),
    case("grad-clip-nan", lambda c: c.train("optim.grad_clip=nan"), 2, "optim.grad_clip", "nan"),
    case("lr-nan", lambda c: c.train("optim.lr=nan"), 2, "optim.lr", "nan"),
    case("lr-negative", lambda c: c.train("optim.lr=-1"), 2, "optim.lr", "> 0", "-1"),
    case("lr-inf", lambda c: c.train("optim.lr=inf"), 2, "optim.lr", "inf"),
    case("beta1-2", lambda c: c.train("optim.beta1=2"), 2, "optim.beta1", "< 1", "2"),
    case("seed-70-bits", lambda c: c.train(f"run.seed={2**70}"), 2, "run.seed", str(2**70)),
    case("eval-batch-size-0", lambda c: c.train("run.eval_batch_size=0"), 2,
         "run.eval_batch_size", ">= 1"),
    case("log-every-0", lambda c: c.train("run.log_every=0"), 2, "run.log_every", ">= 1"),
    case("micro-batch-negative", lambda c: c.train("grpo.micro_batch_size=-1"), 2,
         "grpo.micro_batch_size", ">= 0"),
    case("keep-last-0", lambda c: c.train("run.keep_last=0"), 2, "run.keep_last", ">= 1"),
    case("threads-negative", lambda c: c.train("run.threads=-1"), 2, "run.threads", ">= 0"),
    case("group-size-1", lambda c: c.train("grpo.group_size=1"), 2, "grpo.group_size", ">= 2"),
    case("ode-tail-past-steps", lambda c: c.train("sampler.ode_tail=3"), 2, "sampler.ode_tail",
         "sampler.num_steps"),
    case("cosine-warmup-past-end", lambda c: c.train("optim.schedule=cosine", "optim.warmup=5"),
         2, "optim.warmup", "optim.schedule_steps"),
    case("unknown-shaping-kind", lambda c: c.train("method.shaping.kind=sars2"), 2,
         "method.shaping", "sars2", "sars"),
    case("unknown-schedule-kind", lambda c: c.train("sampler.schedule={kind: brnach}"), 2,
         "sampler.schedule", "brnach", "branch"),
    case("misspelt-strategy-option", lambda c: c.train("method.shaping={kind: sars, gama: 1}"), 2,
         "gama", "gamma"),
    case("pair-names-missing-reward", lambda c: c.train("method.pair=[identity, style]"), 2,
         "method.pair", "style"),
    case("config-missing", lambda c: c.train("--config", str(c.path("nope.yaml"))), 2,
         "{tmp}/nope.yaml", "not found"),
    case("config-is-folder", lambda c: c.train("--config", str(c.folder("conf.yaml"))), 2,
         "{tmp}/conf.yaml", "directory"),
    case("config-invalid-yaml", lambda c: c.train("--config", str(c.write(
         "bad.yaml", "run:\n  steps: [1, 2\n  seed: 3\n"))), 2, "{tmp}/bad.yaml",
         "not valid YAML", "line 3"),
    case("config-billion-laughs", lambda c: c.train("--config", str(c.write(
         "laughs.yaml", LAUGHS + "\nrun: {log_with: *i}\n"))), 2, "{tmp}/laughs.yaml", "aliases"),
    case("config-not-utf8", lambda c: c.train("--config", str(c.write(
         "latin1.yaml", "run:\n  out_dir: caf\xe9\n".encode("latin-1")))), 2,
         "{tmp}/latin1.yaml", "UTF-8", "0xe9"),
    case("config-top-level-list", lambda c: c.train("--config", str(c.write(
         "list.yaml", "- run\n- steps\n"))), 2, "{tmp}/list.yaml", "mapping"),
    case("config-section-not-mapping", lambda c: c.train("--config", str(c.write(
         "sec.yaml", "run: 5\n"))), 2, "'run'", "RunConfig", "mapping"),
    case("config-lr-nan", lambda c: c.train("--config", str(c.write(
         "nan.yaml", "optim: {lr: .nan}\n"))), 2, "optim.lr", "finite", "nan"),
    case("config-lr-inf", lambda c: c.train("--config", str(c.write(
         "inf.yaml", "optim: {lr: .inf}\n"))), 2, "optim.lr", "finite", "inf"),
    case("config-grad-clip-nan", lambda c: c.train("--config", str(c.write(
         "nan.yaml", "optim: {grad_clip: .nan}\n"))), 2, "optim.grad_clip", "finite", "nan"),
    case("override-without-equals", lambda c: ["train", "run.steps", *c.train()[1:]], 2,
         "'run.steps'", "key=value"),
    case("override-space-for-equals", lambda c: ["train", "run.steps", "5", *c.train()[1:]], 2,
         "'run.steps'", "key=value"),
    case("override-without-equals-after-a-flag", lambda c: c.train("run.steps"), 2,
         "'run.steps'", "key=value"),
    case("misspelt-flag", lambda c: c.train("--reume"), 2, "--reume"),
    case("flag-value-ill-typed", lambda c: ["sample", "--reference", SUBJECT, "--prompt",
         PROMPT, "--num", "four", "--out", str(c.path("s.png"))], 2, "--num", "four"),
    case("override-without-key", lambda c: c.train("=5"), 2, "'=5'", "key=value"),
    case("override-empty-part", lambda c: c.train("run..steps=1"), 2, "'run..steps=1'",
         "key=value"),
    case("override-1mb-value", lambda c: c.train(f"run.steps={BIG}"), 2, "run.steps", "xxxxxxxx",
         "..."),
    case("override-1mb-key", lambda c: c.train(f"run.{BIG}=1"), 2, "xxxxxxxx", "chars"),
    case("eval-unknown-key", lambda c: ["eval", "bogus=1"], 2, "'bogus'", "Valid keys"),
    case("eval-bad-protocol", lambda c: ["eval", "protocol=dreambnech"], 2, "protocol",
         "dreambnech"),
    case("eval-negative-images", lambda c: ["eval", "images_per_pair=-1"], 2, "images_per_pair",
         ">= 1"),
    case("eval-config-missing", lambda c: ["eval", "--config", str(c.path("e.yaml"))], 2,
         "{tmp}/e.yaml", "not found"),
    case("eval-model-config-missing", lambda c: ["eval", "--model-config", str(c.path("m.yaml")),
         f"out_dir={c.path('ev')}"], 2, "{tmp}/m.yaml"),
    case("eval-unknown-metric-kind", lambda c: ["eval", "metrics={x: {kind: dinov3}}",
         f"out_dir={c.path('ev')}"], 2, "metrics.x", "dinov3"),
    case("pretrain-unknown-key", lambda c: ["pretrain", "stepz=3"], 2, "'stepz'",
         "Did you mean 'steps'"),
    case("pretrain-steps-negative", lambda c: ["pretrain", "steps=-1", f"out={c.path('g.st')}"],
         2, "steps must be >= 1", "-1"),
    case("pretrain-batch-size-0", lambda c: ["pretrain", "batch_size=0",
         f"out={c.path('g.st')}"], 2, "batch_size must be >= 1", "0"),
]  # fmt: skip

DATA = [
    case("jsonl-missing", lambda c: c.train("data.kind=jsonl", f"data.path={c.path('p.jsonl')}"),
         2, "{tmp}/p.jsonl", "not found"),
    case("jsonl-path-unset", lambda c: c.train("data.kind=jsonl"), 2, "data.kind=jsonl needs",
         "data.path"),
    case("jsonl-empty", lambda c: c.train("data.kind=jsonl",
         f"data.path={c.write('p.jsonl', '')}"), 2, "{tmp}/p.jsonl", "empty"),
    case("jsonl-line-not-json", lambda c: c.jsonl([{"reference": "ref.png", "prompt": PROMPT},
         "{reference: ref.png"]), 2, "{tmp}/pairs.jsonl", "line 2", "JSON"),
    case("jsonl-missing-prompt", lambda c: c.jsonl([{"reference": "ref.png"}]), 2,
         "{tmp}/pairs.jsonl", "line 1", "'prompt'"),
    case("jsonl-not-utf8", lambda c: c.train("data.kind=jsonl", "data.allow_eval_overlap=true",
         "data.path=" + str(c.write("p.jsonl", LATIN1_PAIR))), 2, "{tmp}/p.jsonl", "UTF-8",
         "0xe9"),
    case("jsonl-reference-missing", lambda c: c.jsonl([{"reference": "gone.png",
         "prompt": PROMPT}]), 2, "{tmp}/gone.png", "line 1", "skip_bad"),
    case("jsonl-corrupt-image", lambda c: then(c.write("bad.png", garbage()), c.jsonl(
         [{"reference": "bad.png", "prompt": PROMPT}])), 2, "{tmp}/bad.png", "skip_bad"),
    case("jsonl-truncated-jpeg", lambda c: then(write_truncated_jpeg(c.path("cut.jpg")), c.jsonl(
         [{"reference": "cut.jpg", "prompt": PROMPT}])), 2, "{tmp}/cut.jpg", "truncated"),
    case("jsonl-bomb-png", lambda c: then(write_bomb_png(c.path("bomb.png"), 50_000, 50_000),
         c.jsonl([{"reference": "bomb.png", "prompt": PROMPT}])), 2, "{tmp}/bomb.png",
         "pixels"),
    case("jsonl-1mb-prompt", lambda c: then(c.image(), c.train("data.kind=jsonl", "data.path="
         + str(c.pairs([{"reference": "ref.png", "prompt": BIG}])))), 2, "xxxxxxxx", "chars"),
    case("jsonl-image-root-missing", lambda c: c.jsonl(None, f"data.image_root={c.path('imgs')}"),
         2, "{tmp}/imgs", "data.image_root"),
    case("jsonl-eval-root-missing", lambda c: c.jsonl(None, f"data.eval_root={c.path('db')}"),
         2, "{tmp}/db"),
    case("jsonl-unknown-field", lambda c: c.jsonl(None, "data.fields={promt: text}"), 2,
         "data.fields", "'promt'", "choose from"),
    case("data-kind-unknown", lambda c: c.train("data.kind=parquet"), 2, "'data.kind'",
         "'parquet'", "'jsonl'"),
    case("dreambench-root-missing", lambda c: c.train("data.kind=dreambench",
         f"data.root={c.path('dreambench')}"), 2, "{tmp}/dreambench"),
]  # fmt: skip

WEIGHTS = [
    case("weights-missing", lambda c: c.train(f"model.weights={c.path('w.safetensors')}"), 2,
         "{tmp}/w.safetensors", "cgrpo pretrain"),
    case("weights-garbage", lambda c: c.train("model.weights="
         + str(c.write("w.safetensors", garbage()))), 2, "{tmp}/w.safetensors",
         "model.weights"),
    case("weights-folder", lambda c: c.train(f"model.weights={c.folder('w')}"), 2, "{tmp}/w",
         "is a folder", "model.weights"),
    case("resume-no-checkpoint", lambda c: c.train("--resume"), 2, "--resume", "{tmp}/out",
         "start without --resume"),
    case("resume-step-absent", lambda c: c.train("--resume", "7", out=c.run()), 2, "--resume 7",
         "steps there: 1"),
    case("resume-path-absent", lambda c: c.train("--resume", str(c.path("nonexistent"))), 2,
         "{tmp}/nonexistent", "no such folder"),
    case("resume-model-garbage", lambda c: then(c.corrupt("model.safetensors", same_size_garbage),
         c.resume()), 2, "{run}/checkpoints/step_000001/model.safetensors"),
    case("resume-model-truncated", lambda c: then(c.corrupt("model.safetensors", half),
         c.resume()), 2, "{run}/checkpoints", "--resume"),
    case("resume-model-truncated-named", lambda c: then(c.corrupt("model.safetensors", half),
         c.resume(at=c.ckpt())), 2, "{run}/checkpoints/step_000001", "incomplete"),
    case("resume-model-truncated-meta-too", lambda c: then(c.corrupt("model.safetensors", half,
         sizes=True), c.resume()), 2, "{run}/checkpoints/step_000001/model.safetensors"),
    case("resume-state-garbage", lambda c: then(c.corrupt("state.pt", same_size_garbage),
         c.resume()), 2, "{run}/checkpoints/step_000001/state.pt"),
    case("resume-state-truncated", lambda c: then(c.corrupt("state.pt", half, sizes=True),
         c.resume()), 2, "{run}/checkpoints/step_000001/state.pt"),
    case("resume-state-list", lambda c: then(c.state([1, 2, 3]), c.resume()), 2,
         "{run}/checkpoints/step_000001/state.pt"),
    case("resume-state-no-optimizer", lambda c: then(c.state(without("optimizer")), c.resume()),
         2, "{run}/checkpoints/step_000001", "optimizer"),
    case("resume-state-pickle", lambda c: then(c.state({"optimizer": Path("x")}), c.resume()), 2,
         "{run}/checkpoints/step_000001/state.pt"),
    case("resume-other-lora-rank", lambda c: c.resume("model.lora_rank=4"), 2,
         "model.lora_rank: 0 -> 4", "--allow-changes"),
    case("resume-other-group-size", lambda c: c.resume("grpo.group_size=6"), 2,
         "grpo.group_size: 4 -> 6", "--allow-changes"),
    case("eval-run-model-garbage", lambda c: then(c.corrupt("model.safetensors", same_size_garbage),
         ["eval", "--run", str(c.run()), f"out_dir={c.path('ev')}", "--quiet"]), 2,
         "{run}/checkpoints/step_000001/model.safetensors"),
    case("eval-run-model-truncated", lambda c: then(c.corrupt("model.safetensors", half),
         ["eval", "--run", str(c.run()), f"out_dir={c.path('ev')}", "--quiet"]), 2,
         "{run}/checkpoints"),
    case("eval-run-absent", lambda c: ["eval", "--run", str(c.path("norun")),
         f"out_dir={c.path('ev')}"], 2, "{tmp}/norun", "no config.yaml"),
    case("eval-run-no-checkpoint", lambda c: then(shutil.rmtree(c.run() / "checkpoints"),
         ["eval", "--run", str(c.run()), f"out_dir={c.path('ev')}", "--quiet"]), 2,
         "--run {run}", "no complete checkpoint"),
    case("sample-run-model-garbage", lambda c: then(c.corrupt("model.safetensors",
         same_size_garbage), ["sample", "--run", str(c.run()), "--reference", SUBJECT,
         "--prompt", PROMPT, "--out", str(c.path("s.png"))]), 2,
         "{run}/checkpoints/step_000001/model.safetensors"),
    case("sample-run-model-truncated", lambda c: then(c.corrupt("model.safetensors", half),
         ["sample", "--run", str(c.run()), "--reference", SUBJECT, "--prompt", PROMPT,
          "--out", str(c.path("s.png"))]), 2, "{run}/checkpoints"),
    case("sample-run-step-absent", lambda c: ["sample", "--run", str(c.run()), "--step", "7",
         "--reference", SUBJECT, "--prompt", PROMPT, "--out", str(c.path("s.png"))], 2,
         "--step 7", "steps: 1"),
    case("sample-run-absent", lambda c: ["sample", "--run", str(c.path("norun")), "--reference",
         SUBJECT, "--prompt", PROMPT, "--out", str(c.path("s.png"))], 2, "{tmp}/norun",
         "no config.yaml"),
    case("sample-weights-missing", lambda c: ["sample", "--weights", str(c.path("w.st")),
         "--reference", SUBJECT, "--prompt", PROMPT, "--out", str(c.path("s.png"))], 2,
         "{tmp}/w.st", "not found"),
    case("export-run-embedded", lambda c: ["export", "--run", str(c.run()), "--out",
         str(c.path("l.safetensors"))], 2, "--run", "FLUX"),
    case("export-run-absent", lambda c: ["export", "--run", str(c.path("norun")), "--out",
         str(c.path("l.safetensors"))], 2, "{tmp}/norun", "no config.yaml"),
    case("export-run-model-garbage", lambda c: then(c.flux_run(), c.corrupt("model.safetensors",
         same_size_garbage), ["export", "--run", str(c.run()), "--raw", "--out",
         str(c.path("l.safetensors"))]), 2, "{run}/checkpoints/step_000001/model.safetensors"),
    case("export-run-model-truncated", lambda c: then(c.flux_run(), c.corrupt("model.safetensors",
         half, sizes=True), ["export", "--run", str(c.run()), "--raw", "--out",
         str(c.path("l.safetensors"))]), 2, "{run}/checkpoints/step_000001/model.safetensors"),
    case("export-run-step-absent", lambda c: then(c.flux_run(), ["export", "--run", str(c.run()),
         "--step", "9", "--out", str(c.path("l.safetensors"))]), 2, "--step 9"),
]  # fmt: skip

PATHS = [
    case("out-dir-a-file", lambda c: c.train(out=c.write("taken", "x")), 2, "run.out_dir",
         "{tmp}/taken", "file"),
    case("out-dir-under-a-file", lambda c: c.train(out=c.write("taken", "x") / "run"), 2,
         "run.out_dir", "{tmp}/taken", "file"),
    case("out-dir-name-too-long", lambda c: c.train(out=c.path("y" * 300)), 2, "run.out_dir",
         "yyyyyyyy"),
    case("sample-out-a-folder", lambda c: ["sample", "--reference", SUBJECT, "--prompt", PROMPT,
         "--out", str(c.folder("grid"))], 2, "--out", "{tmp}/grid"),
    case("sample-out-not-an-image", lambda c: ["sample", "--reference", SUBJECT, "--prompt",
         PROMPT, "--out", str(c.path("grid.txt"))], 2, "--out", ".png"),
    case("compare-out-a-file", lambda c: ["compare", str(c.run()), "--out",
         str(c.write("cmp", "x"))], 2, "--out", "{tmp}/cmp"),
    case("compare-empty-folder", lambda c: ["compare", str(c.folder("empty")), "--out",
         str(c.path("cmp"))], 2, "{tmp}/empty", "not a run"),
    case("compare-malformed-eval-json", lambda c: then(c.write("ev/eval.json", "[1, 2]"),
         ["compare", str(c.path("ev")), "--out", str(c.path("cmp"))]), 2, "{tmp}/ev",
         "eval.json"),
    case("compare-run-absent", lambda c: ["compare", str(c.path("norun")), "--out",
         str(c.path("cmp"))], 2, "{tmp}/norun", "not a run"),
    case("export-out-not-safetensors", lambda c: ["export", "--run", str(c.run()), "--out",
         str(c.path("lora.bin"))], 2, "--out", ".safetensors"),
    case("eval-out-dir-a-file", lambda c: ["eval", f"out_dir={c.write('taken', 'x')}",
         f"--model-config={c.write('m.yaml', f'model: {{weights: {c.weights}}}')}",
         "--quiet"], 2, "out_dir", "{tmp}/taken"),
    case("serve-reward-config-missing", lambda c: ["serve-reward", "--config",
         str(c.path("r.yaml")), "--port", "0"], 2, "{tmp}/r.yaml"),
    case("serve-reward-no-rewards", lambda c: ["serve-reward", "--config",
         str(c.write("r.yaml", "run: {steps: 1}\n")), "--port", "0"], 2, "{tmp}/r.yaml",
         "rewards"),
    case("serve-reward-unknown-kind", lambda c: ["serve-reward", "--config",
         str(c.write("r.yaml", "rewards: {p: {kind: dinov3}}\n")), "--port", "0"], 2, "dinov3"),
    case("setup-venv-not-a-venv", lambda c: ["setup", "hpsv3", "--venv", str(c.folder("v"))], 2,
         "{tmp}/v", "virtualenv"),
    case("setup-qwen-missing", lambda c: ["setup", "hpsv3", "--venv", str(c.path("v")),
         "--qwen", str(c.path("qwen"))], 2, "--qwen", "{tmp}/qwen", "config.json"),
]  # fmt: skip

DEVICES = [
    case("device-cuda-without-gpu", lambda c: c.train("model.device=cuda"), 3, "model.device=cuda",
         "no usable GPU", "model.device=cpu"),
    case("device-misspelt", lambda c: c.train("model.device=cdua"), 3, "model.device='cdua'",
         "not a device"),
    case("device-index-past-count", lambda c: c.train("model.device=cuda:7"), 3, "model.device",
         "cuda:7"),
    case("reward-device-misspelt", lambda c: c.train(
         "rewards.identity={kind: effnet, device: cpuu}"), 3, "rewards.identity.device", "cpuu",
         "cpu, cuda"),
    case("group-size-past-memory", lambda c: c.train("grpo.group_size=10000000"), 3,
         "grpo.group_size", "GB", "free"),
]  # fmt: skip

REWARDS = [
    case("reward-kind-unknown", lambda c: c.train("rewards.identity={kind: dinov3}"), 2,
         "rewards.identity.kind", "dinov3", "dinov2"),
    case("reward-option-misspelt", lambda c: c.train(
         "rewards.prompt={kind: colour, measur: redness}"), 2, "rewards.prompt", "measur",
         "measure"),
    case("reward-weight-nan", lambda c: c.train(
         "rewards.prompt={kind: embedded_prompt, weight: .nan}"), 2, "rewards.prompt.weight"),
    case("reward-weight-string", lambda c: c.train(
         "rewards.prompt={kind: embedded_prompt, weight: heavy}"), 2, "rewards.prompt.weight",
         "heavy"),
    case("reward-bare-name", lambda c: c.train("rewards.prompt=embedded_prompt"), 2,
         "rewards.prompt", "kind"),
    case("dinov2-path-missing", lambda c: c.train(
         f"rewards.identity={{kind: dinov2, path: {c.path('dinov2')}}}"), 2, "{tmp}/dinov2",
         "hf download"),
    case("judge-base-url-not-url", lambda c: c.train(
         "rewards.judge={kind: vlm_judge, base_url: not a url, model: m}"), 2, "base_url",
         "not a url"),
    case("judge-unreachable", lambda c: c.train(
         f"rewards.judge={{kind: vlm_judge, base_url: 'http://127.0.0.1:{c.port}/v1', model: m, "
         "retries: 0, timeout: 2}"), 4, "127.0.0.1:{port}", "start the server"),
    case("http-reward-unreachable", lambda c: c.train(
         f"rewards.remote={{kind: http, url: 'http://127.0.0.1:{c.port}', retries: 0, "
         "timeout: 2}"), 4, "127.0.0.1:{port}", "cgrpo serve-reward"),
    case("http-reward-url-not-url", lambda c: c.train(
         "rewards.remote={kind: http, url: localhost}"), 2, "url", "localhost"),
]  # fmt: skip

SAMPLE = [
    case("sample-num-0", lambda c: ["sample", "--reference", SUBJECT, "--prompt", PROMPT,
         "--num", "0", "--out", str(c.path("s.png"))], 2, "--num 0", "at least 1"),
    case("sample-reference-unknown", lambda c: ["sample", "--reference", "purple-dots-blob",
         "--prompt", PROMPT, "--out", str(c.path("s.png"))], 2, "--reference",
         "'purple-dots-blob'", "image file"),
    case("sample-reference-1mb", lambda c: ["sample", "--reference", BIG, "--prompt", PROMPT,
         "--out", str(c.path("s.png"))], 2, "--reference", "xxxxxxxx", "chars"),
    case("sample-prompt-1mb", lambda c: ["sample", "--reference", SUBJECT, "--prompt", BIG,
         "--out", str(c.path("s.png"))], 2, "xxxxxxxx", "chars", "grammar"),
    case("sample-reference-file-missing", lambda c: ["sample", "--reference",
         str(c.path("me.png")), "--prompt", PROMPT, "--out", str(c.path("s.png"))], 2,
         "{tmp}/me.png", "not found"),
    case("sample-reference-corrupt", lambda c: ["sample", "--reference",
         str(c.write("me.png", garbage())), "--prompt", PROMPT, "--out", str(c.path("s.png"))],
         2, "{tmp}/me.png"),
    case("sample-prompt-outside-grammar", lambda c: ["sample", "--reference", SUBJECT,
         "--prompt", "a photo of a cat", "--out", str(c.path("s.png"))], 2, "'a photo of a cat'",
         "grammar"),
    case("sample-two-references", lambda c: ["sample", "--reference", SUBJECT, "--reference",
         SUBJECT, "--prompt", PROMPT, "--out", str(c.path("s.png"))], 2, "one --reference"),
]  # fmt: skip

CASES = [*CONFIG, *DATA, *WEIGHTS, *PATHS, *DEVICES, *REWARDS, *SAMPLE]

#: Run as a real process too: every exit code but 3 and most commands; five of them answer
#: before torch is imported (the rest take 3-6 s of CPU each, most of it imports).
SUBPROCESS = [
    "steps-negative", "config-billion-laughs", "config-not-utf8", "eval-bad-protocol",
    "setup-qwen-missing", "resume-state-list", "judge-unreachable", "sample-num-0",
    "export-out-not-safetensors",
]  # fmt: skip


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    """A 1-step tiny run with a checkpoint of step 1 (each case copies it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    ctx = Ctx(run.parent, tiny_weights, run)
    assert main(ctx.train("run.image_every=0", out=run)) == 0
    assert (run / "checkpoints" / "step_000001" / "state.pt").is_file()
    return run


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def prepared(c: Case, tmp: Path, weights: Path, trained: Path) -> tuple[Ctx, list[str], set[str]]:
    ctx = Ctx(tmp, weights, trained)
    argv = c.build(ctx)
    return ctx, argv, tree(tmp)


def check_line(c: Case, ctx: Ctx, err: str, before: set[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    assert len(line) < 1000, line[:1200]
    for needle in c.needles:
        needle = needle.replace("{tmp}", str(ctx.tmp)).replace("{port}", str(ctx.port))
        needle = needle.replace("{run}", str(ctx.tmp / "trained"))
        assert needle in line, f"{needle!r} not in {line!r}"
    assert tree(ctx.tmp) == before, sorted(tree(ctx.tmp) - before)


@pytest.mark.parametrize("c", CASES)
def test_bad_input_is_one_line_and_leaves_nothing(
    c: Case,
    tmp_path: Path,
    tiny_weights: Path,
    trained: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # a default output path would land in the case's folder
    monkeypatch.delenv("CGRPO_DEBUG", raising=False)
    ctx, argv, before = prepared(c, tmp_path, tiny_weights, trained)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == c.code, (code, err[-3000:])
    assert err.strip().startswith(f"cgrpo {argv[0]}: error: "), err[-3000:]
    check_line(c, ctx, err, before)


@dataclass
class Process:
    """One case run as ``python -m cgrpo ...`` (:func:`processes`)."""

    case: Case
    ctx: Ctx
    before: set[str]
    argv: list[str]
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def processes(
    tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, trained: Path
) -> dict[str, tuple[Process, int, str, str]]:
    """The :data:`SUBPROCESS` cases, each in its own folder, started together: case id ->
    (its process, exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "CGRPO_DEBUG"}
    started: list[Process] = []
    done = {}
    try:
        for param in CASES:
            c = param.values[0]
            if c.id in SUBPROCESS:
                tmp = tmp_path_factory.mktemp(c.id)
                ctx, argv, before = prepared(c, tmp, tiny_weights, trained)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cgrpo", *argv], cwd=tmp, env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
                started.append(Process(c, ctx, before, argv, proc))
        for p in started:
            out, err = p.proc.communicate(timeout=180)
            done[p.case.id] = (p, p.proc.returncode, out, err)
    finally:
        for p in started:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
    return done


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_as_a_process(
    case_id: str, processes: dict[str, tuple[Process, int, str, str]]
) -> None:
    p, code, out, err = processes[case_id]
    assert "Traceback" not in out + err, err[-3000:]
    assert code == p.case.code, err[-3000:]
    assert err.strip().startswith(f"cgrpo {p.argv[0]}: error: "), err[-3000:]
    check_line(p.case, p.ctx, err, p.before)
