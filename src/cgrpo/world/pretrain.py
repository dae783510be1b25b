"""Pretraining of the embedded base generator (``cgrpo pretrain``).

Plain rectified-flow matching on rendered (reference, prompt, target) triples of the
training subjects of a split (:mod:`cgrpo.world.split`: the shipped 24 / 8, or ``wide``,
all 256 identities but ``held_out``)::

    sigma ~ logit-normal(0, 1),  x_sigma = (1 - sigma) * x0 + sigma * noise,
    loss = || v_theta(x_sigma, sigma, prompt, reference) - (noise - x0) ||^2

Like real subject-driven models, the base model is made biased to copy its reference:
a share of the targets ignore the prompt's recolour (``copy_colour_prob``) or background
(``copy_background_prob``), so that RL has work to do and an identity-heavy reward can
make prompt following worse. The EMA weights are saved as safetensors (float16) together
with the architecture and the subject split in the file's metadata.

With ``out`` set, every ``save_every`` steps also rewrites a resumable checkpoint in
``<out>.state/`` (:mod:`cgrpo.world.pretrain_state`); ``resume=true`` continues from it
exactly and ``time_budget`` stops (with a checkpoint) after that many seconds. Each
invocation ends with the held-out figure in ``<out>.json``
(:mod:`cgrpo.world.pretrain_report`), beside the shipped base's on the same pairs.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from cgrpo.config.core import config_to_dict, option
from cgrpo.io.atomic import atomic_write
from cgrpo.world import scene
from cgrpo.world.generator import GeneratorConfig, TinyKontext, Tokenizer
from cgrpo.world.pretrain_report import LEVELS, loss_figures
from cgrpo.world.pretrain_state import (
    STATE_FILE,
    check_same_settings,
    load_pretrain_state,
    restore_pretrain_state,
    save_pretrain_state,
)
from cgrpo.world.split import SubjectSplit, make_split, split_metadata
from cgrpo.world.weights_file import DEFAULT_WEIGHTS, load_generator, save_generator

__all__ = [
    "DEFAULT_WEIGHTS",
    "PretrainConfig",
    "flow_matching_loss",
    "load_generator",
    "make_batch",
    "pretrain",
    "save_generator",
    "state_folder",
    "to_model_range",
]


@dataclass
class PretrainConfig:
    """Options of ``cgrpo pretrain``."""

    steps: int = option(4000, "optimizer steps", unit="steps", check=">= 1")
    batch_size: int = option(48, "images per step", unit="images", check=">= 1")
    lr: float = option(1e-3, "AdamW peak learning rate (cosine decay to 10%)", check="> 0, finite")
    warmup: int = option(200, "linear warm-up", unit="steps", check=">= 0")
    weight_decay: float = option(0.0, "AdamW weight decay", check=">= 0, finite")
    ema: float = option(0.999, "EMA decay of the saved weights", check=">= 0, < 1")
    copy_colour_prob: float = option(
        0.35,
        "share of recolour prompts whose target keeps the reference colour (copy bias)",
        check=">= 0, <= 1",
    )
    copy_background_prob: float = option(
        0.3,
        "share of background prompts whose target keeps the white background (copy bias)",
        check=">= 0, <= 1",
    )
    seed: int = option(0, "random seed", check=">= 0, < 9223372036854775808")
    threads: int = option(0, "torch CPU threads (0: torch's default)", check=">= 0")
    out: str | None = option(
        None,
        "where the EMA weights are written (null: the package's world/weights/base.safetensors)",
    )
    log_every: int = option(100, "print the loss every N steps", unit="steps", check=">= 1")
    save_every: int = option(
        250,
        "write the EMA weights (and the resumable checkpoint) every N steps",
        unit="steps",
        check=">= 1",
    )
    subjects: Literal["shipped", "wide"] = option(
        "shipped",
        "subject split: 'shipped' (24 training / 8 held-out identities, the shipped base's) "
        "or 'wide' (all 256 but held_out train); written into the weights' metadata, so runs "
        "and cgrpo eval with these weights hold out the same identities",
    )
    held_out: int = option(
        32,
        "wide: held-out identities, a multiple of 8 (as many per shape); they include the "
        "shipped split's 8 held-out and none of its 24 training identities",
        check=">= 8, <= 128",
    )
    state: str | None = option(
        None,
        "folder of the resumable checkpoint (model, EMA, optimizer, RNG, step), rewritten "
        "every save_every steps (null: '<out without suffix>.state' when out is set, none "
        "when it is not)",
    )
    resume: bool = option(
        False,
        "continue from the checkpoint in state; the other settings must be the checkpoint's, "
        "but for time_budget, log_every, save_every, threads, out, state and report_prompts",
    )
    time_budget: float = option(
        0.0,
        "stop after this much wall time of this process, with a checkpoint, to go on with "
        "resume=true (0: no limit)",
        unit="s",
        check=">= 0, finite",
    )
    report_prompts: int = option(
        4,
        "held-out figure written to '<out without suffix>.json' at the end: prompts per "
        "held-out identity (0: none)",
        check=">= 0",
    )
    model: GeneratorConfig = field(default_factory=GeneratorConfig)

    def __post_init__(self) -> None:
        if self.held_out % len(scene.SHAPES):
            raise ValueError(
                f"held_out must be a multiple of {len(scene.SHAPES)} (as many per shape), "
                f"got {self.held_out}"
            )


def to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B,H,W,3) or (B,3,H,W) images in [0,1] -> (B,3,H,W) float tensor in [-1,1]."""
    t = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    return t * 2 - 1


def make_batch(
    rng: random.Random, subjects: list[scene.Subject], batch_size: int, *, cfg: PretrainConfig
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Prompts, references and (copy-biased) targets for one pretraining batch."""
    prompts, refs, targets = [], [], []
    for _ in range(batch_size):
        subject = rng.choice(subjects)
        prompt = scene.random_prompt(subject, rng)
        ignore = []
        if prompt.colour and rng.random() < cfg.copy_colour_prob:
            ignore.append("colour")
        if prompt.background and rng.random() < cfg.copy_background_prob:
            ignore.append("background")
        prompts.append(prompt.text)
        refs.append(scene.reference_image(subject))
        targets.append(scene.render(subject, prompt, ignore=tuple(ignore)))
    return prompts, to_model_range(np.stack(refs)), to_model_range(np.stack(targets))


def flow_matching_loss(
    model: TinyKontext, tok: Tokenizer, prompts: list[str], *, refs: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    """The rectified-flow loss of one batch (the module docstring's formula): draws
    ``sigma ~ logit-normal(0, 1)`` and the noise from the global RNG."""
    sigma = torch.sigmoid(torch.randn(x0.shape[0]))
    noise = torch.randn_like(x0)
    s = sigma[:, None, None, None]
    v = model((1 - s) * x0 + s * noise, sigma, tok(prompts), reference=refs)
    return (v - (noise - x0)).pow(2).mean()


def state_folder(cfg: PretrainConfig) -> Path | None:
    """Where the resumable checkpoint goes: ``state``, else ``<out>.state``, else none."""
    if cfg.state:
        return Path(cfg.state)
    return Path(cfg.out).with_suffix(".state") if cfg.out else None


def _lr_at(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return float(cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac))))


@dataclass
class _Run:
    """What the loop carries from step to step."""

    model: TinyKontext
    ema: TinyKontext
    opt: torch.optim.Optimizer
    rng: random.Random
    split: SubjectSplit
    step: int = 0
    running: float | None = None
    elapsed: float = 0.0  # wall time of earlier invocations (resume)


def _start(cfg: PretrainConfig) -> _Run:
    """A fresh run, or the checkpoint's with ``resume``; refuses to start afresh over one."""
    torch.manual_seed(cfg.seed)
    split = make_split(cfg.subjects, cfg.held_out)
    model = TinyKontext(cfg.model)
    ema = TinyKontext(cfg.model)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _Run(model, ema, opt, random.Random(cfg.seed), split)
    folder = state_folder(cfg)
    path = folder / STATE_FILE if folder else None
    if not cfg.resume:
        if path is not None and path.exists():
            raise FileExistsError(
                f"'{path}' holds the checkpoint of an earlier pretraining: go on with "
                "resume=true, or remove it (or pick another out= / state=) to start afresh"
            )
        return run
    if path is None:
        raise ValueError("resume=true needs out= (or state=): the checkpoint lives beside it")
    if not path.is_file():
        raise FileNotFoundError(f"resume=true: no checkpoint at '{path}'; start without it")
    state = load_pretrain_state(folder)
    check_same_settings(state["settings"], config_to_dict(cfg), path)
    restore_pretrain_state(state, model=model, ema=ema, opt=opt, rng=run.rng, path=path)
    run.step, run.running, run.elapsed = state["step"], state["running"], state["elapsed"]
    return run


def _step(run: _Run, cfg: PretrainConfig, tok: Tokenizer) -> float:
    """One optimizer step and EMA update at ``run.step``; returns the batch loss."""
    prompts, refs, x0 = make_batch(run.rng, list(run.split.train), cfg.batch_size, cfg=cfg)
    loss = flow_matching_loss(run.model, tok, prompts, refs=refs, x0=x0)
    for g in run.opt.param_groups:
        g["lr"] = _lr_at(cfg, run.step)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.opt.step()
    decay = min(cfg.ema, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        for pe, pm in zip(run.ema.parameters(), run.model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)
    return loss.item()


def _save(run: _Run, cfg: PretrainConfig, out: Path, *, elapsed: float) -> None:
    """The EMA weights (with the split) and, when there is a state folder, the checkpoint."""
    meta = {"step": run.step, "seed": cfg.seed, "loss": f"{run.running:.5f}"}
    save_generator(run.ema, out, {**meta, **split_metadata(run.split)})
    folder = state_folder(cfg)
    if folder is not None:
        save_pretrain_state(
            folder, step=run.step, model=run.model, ema=run.ema, opt=run.opt, rng=run.rng,
            running=run.running, elapsed=elapsed, settings=config_to_dict(cfg),
        )  # fmt: skip


def _report(run: _Run, cfg: PretrainConfig, out: Path, *, elapsed: float) -> None:
    """The held-out figure of the written weights (and of the shipped base) in <out>.json."""
    if not cfg.report_prompts or not out.is_file():
        return
    models = {"weights": load_generator(out)}
    if out.resolve() != DEFAULT_WEIGHTS.resolve():
        models["shipped_base"] = load_generator(DEFAULT_WEIGHTS)
    figures = loss_figures(models, run.split, prompts_per_subject=cfg.report_prompts)
    report = {
        "weights": str(out),
        "step": run.step,
        "steps": cfg.steps,
        "finished": run.step >= cfg.steps,
        "seconds": round(elapsed, 1),
        "parameters": sum(p.numel() for p in run.ema.parameters()),
        "split": run.split.name,
        "training_subjects": len(run.split.train),
        "held_out_subjects": [s.name for s in run.split.held_out],
        "figure": "flow-matching loss against the renderer's truth (no copy bias), "
        f"{cfg.report_prompts} seeded prompts per subject x {len(LEVELS)} noise levels "
        "(logit-normal quantiles), fixed noise; train_loss: as many pairs of training "
        "subjects; the same pairs and noise for every model",
        "loss": figures,  # {weights: {held_out_loss, train_loss}, shipped_base: {...}}
    }
    path = out.with_suffix(".json")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
    shown = ", ".join(f"{k} {v['held_out_loss']:.4f}" for k, v in figures.items())
    print(f"held-out flow-matching loss: {shown} -> {path}", flush=True)


def pretrain(cfg: PretrainConfig) -> Path:
    """Train the base generator (or go on with ``resume``); returns the weights' path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = _start(cfg)
    out = Path(cfg.out) if cfg.out else DEFAULT_WEIGHTS
    tok = Tokenizer(cfg.model.max_text)
    t0, first = time.time(), run.step
    bar = tqdm(range(run.step, cfg.steps), desc="pretrain", mininterval=5, initial=run.step,
               total=cfg.steps, disable=None)  # fmt: skip
    for _ in bar:
        loss = _step(run, cfg, tok)
        run.running = loss if run.running is None else 0.98 * run.running + 0.02 * loss
        run.step += 1
        bar.set_postfix(loss=f"{run.running:.4f}")
        spent = time.time() - t0
        if run.step % cfg.log_every == 0:
            rate = (run.step - first) / max(spent, 1e-9)
            print(
                f"step {run.step}/{cfg.steps} loss {run.running:.4f} "
                f"lr {_lr_at(cfg, run.step - 1):.2e} {spent:.0f}s ({rate:.2f} steps/s)",
                flush=True,
            )
        over = bool(cfg.time_budget) and spent >= cfg.time_budget
        if run.step % cfg.save_every == 0 or run.step == cfg.steps or over:
            _save(run, cfg, out, elapsed=run.elapsed + spent)
        if over and run.step < cfg.steps:
            print(
                f"time budget of {cfg.time_budget:g}s reached at step {run.step}/{cfg.steps}; "
                "go on with the same command and resume=true",
                flush=True,
            )
            break
    bar.close()
    _report(run, cfg, out, elapsed=run.elapsed + time.time() - t0)
    return out
