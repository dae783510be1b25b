"""Pretraining of the embedded base generator (``cgrpo pretrain``).

Plain rectified-flow matching on rendered (reference, prompt, target) triples of the
24 training subjects::

    sigma ~ logit-normal(0, 1),  x_sigma = (1 - sigma) * x0 + sigma * noise,
    loss = || v_theta(x_sigma, sigma, prompt, reference) - (noise - x0) ||^2

Like real subject-driven models, the base model is made biased to copy its reference:
a share of the targets ignore the prompt's recolour (``copy_colour_prob``) or background
(``copy_background_prob``), so that RL has work to do and an identity-heavy reward can
make prompt following worse. The EMA weights are saved as safetensors (float16) together
with the architecture in the file's metadata.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cgrpo.config.core import option
from cgrpo.io.atomic import atomic_write
from cgrpo.world import scene
from cgrpo.world.generator import GeneratorConfig, TinyKontext, Tokenizer

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "base.safetensors"


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
    save_every: int = option(250, "write the EMA weights every N steps", unit="steps", check=">= 1")
    model: GeneratorConfig = field(default_factory=GeneratorConfig)


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


def save_generator(model: TinyKontext, path: str | Path, extra: dict | None = None) -> None:
    """Write the generator's weights (float16) and architecture atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "config": json.dumps(model.config.to_dict()),
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_generator(path: str | Path | None = None) -> TinyKontext:
    """Load a generator written by :func:`save_generator` (default: the shipped base model)."""
    from safetensors import safe_open

    path = Path(path) if path else DEFAULT_WEIGHTS
    fix = "point model.weights at a file `cgrpo pretrain` wrote (or leave it unset for the base)"
    if path.is_dir():
        raise IsADirectoryError(
            f"embedded generator weights: '{path}' is a folder, not a safetensors file; {fix}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"embedded generator weights not found at {path}. The base model ships with the "
            "package (cgrpo/world/weights/base.safetensors); re-create it with `cgrpo pretrain` "
            "or pass the path of a file it wrote."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError: not a safetensors file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read generator weights '{path}' ({first}); {fix}") from exc
    if "config" not in meta:
        raise ValueError(f"'{path}' has no generator config in its metadata; {fix}")
    try:
        model = TinyKontext(GeneratorConfig(**json.loads(meta["config"])))
        model.load_state_dict(tensors)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"generator weights '{path}' do not fit its config ({first}); {fix}"
        ) from exc
    return model


def pretrain(cfg: PretrainConfig) -> Path:
    """Train the base generator; returns the path of the saved EMA weights."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    train_subjects, _ = scene.all_subjects()
    model = TinyKontext(cfg.model)
    ema = TinyKontext(cfg.model)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    tok = Tokenizer(cfg.model.max_text)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))

    out = Path(cfg.out) if cfg.out else DEFAULT_WEIGHTS
    t0 = time.time()
    running = None
    bar = tqdm(range(cfg.steps), desc="pretrain", mininterval=5)
    for step in bar:
        prompts, refs, x0 = make_batch(rng, train_subjects, cfg.batch_size, cfg=cfg)
        loss = flow_matching_loss(model, tok, prompts, refs=refs, x0=x0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if (step + 1) % cfg.log_every == 0:
            print(
                f"step {step + 1} loss {running:.4f} lr {lr_at(step):.2e} {time.time() - t0:.0f}s",
                flush=True,
            )
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_generator(ema, out, {"step": step + 1, "seed": cfg.seed, "loss": f"{running:.5f}"})
    return out
