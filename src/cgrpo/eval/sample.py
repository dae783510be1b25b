"""``cgrpo sample``: images for a reference and prompts, from the base model or a run.

With ``--run`` the run's own model and sampler settings are used (``sampler.shift``,
``run.eval_steps`` or ``sampler.num_steps``), and the checkpoint's EMA weights when it has
them (``--raw``: its raw weights), i.e. the model the run's evaluation scored."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cgrpo.config.core import load_config
from cgrpo.data.base import images_to_tensor
from cgrpo.io.checkpoint import latest_checkpoint, load_weights
from cgrpo.io.images import load_image
from cgrpo.io.run_log import save_grid
from cgrpo.policies.base import Policy
from cgrpo.run.build import build_policy, eval_sigmas
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.sampling.rollout import sample_ode
from cgrpo.world import scene

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_reference(spec: str) -> torch.Tensor:
    """(1,3,32,32) reference from a subject name or an image file (centre square)."""
    path = Path(spec)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path, scene.IMAGE_SIZE, crop=True)[None]
    return images_to_tensor([scene.reference_image(scene.subject_by_name(spec))])


def policy_from(
    run: Path | None, weights: Path | None, ema: bool = True
) -> tuple[Policy, TrainConfig]:
    """The base policy and config, or the run's (its latest checkpoint's EMA or raw weights)."""
    if run is None:
        cfg = load_config(TrainConfig, EMBEDDED_CONFIG, [])
    else:
        if not (Path(run) / "config.yaml").is_file():
            raise FileNotFoundError(f"--run {run}: no config.yaml there; pass a cgrpo train run")
        cfg = load_config(TrainConfig, Path(run) / "config.yaml", [])
    if cfg.model.kind != "embedded":
        raise ValueError("cgrpo sample draws from the embedded generator (model.kind=embedded)")
    if weights is not None:
        cfg.model.weights = str(weights)
    policy = build_policy(cfg, keep_reference=False)
    if run is not None:
        last = latest_checkpoint(Path(run) / "checkpoints")
        if last is None:
            raise FileNotFoundError(f"no complete checkpoint under {run}/checkpoints")
        tensors, _ = load_weights(last, ema=ema)
        policy.load_trainable_state_dict(tensors)
    return policy, cfg


def sample_command(args: argparse.Namespace) -> None:
    policy, cfg = policy_from(args.run, args.weights, ema=not args.raw)
    ref = load_reference(args.reference)
    prompts = [p for p in args.prompt for _ in range(args.num)]
    for p in args.prompt:
        scene.parse_prompt(p)  # clear error for prompts outside the grammar
    refs = ref.repeat(len(prompts), 1, 1, 1)
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn((len(prompts), *policy.latent_shape()), generator=gen)
    cond = policy.encode_condition(refs, prompts)
    sigmas = eval_sigmas(cfg, args.steps)
    images = policy.decode(sample_ode(policy, cond, sigmas, noise=noise))
    save_grid(Path(args.out), refs, images, group_size=args.num)
    print(f"wrote {args.out}: one row per prompt ({', '.join(args.prompt)})")
