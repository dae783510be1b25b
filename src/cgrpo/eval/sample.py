"""``cgrpo sample``: images for a reference and prompts, from the base model or a run.

With ``--run`` the run's own model and sampler settings are used (``sampler.shift``,
``run.eval_steps`` or ``sampler.num_steps``, and for FLUX ``flux.guidance``), and the
checkpoint's EMA weights when it has them (``--raw``: its raw weights; ``--step N``: that
checkpoint instead of the latest), i.e. the model the run's evaluation scored.

The embedded generator takes a subject name or an image file (centre square, 32 px); a
FLUX run takes image files, read and prepared as its training read its pairs (the whole
image for ``flux.reference_preprocess`` kontext / uno, which the policy then prepares as
its pipeline does; the centre square for ``square``), several for UNO's multi-subject
generation (``flux.position_scheme=uno``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cgrpo.config.core import load_config
from cgrpo.data.base import images_to_tensor
from cgrpo.data.files import load_reference as load_reference_file
from cgrpo.data.files import reference_batch
from cgrpo.data.references import References, reward_view
from cgrpo.eval.run_model import run_config, run_weights
from cgrpo.io.images import load_image
from cgrpo.io.paths import check_output_file
from cgrpo.io.run_log import save_grid
from cgrpo.policies.base import Policy
from cgrpo.run.build import build_policy, eval_sigmas, keeps_aspect
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.sampling.rollout import sample_ode
from cgrpo.world import scene

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_reference(spec: str) -> torch.Tensor:
    """(1,3,32,32) reference from a subject name or an image file (centre square)."""
    path = Path(spec)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path, scene.IMAGE_SIZE, crop=True)[None]
    try:
        subject = scene.subject_by_name(spec)
    except ValueError as e:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"--reference: {e}; or give an image file ({suffixes})") from None
    return images_to_tensor([scene.reference_image(subject)])


def flux_references(specs: list[str], cfg: TrainConfig) -> References:
    """One pair's reference files for a FLUX run, loaded as its datasets load them."""
    paths = tuple(Path(s) for s in specs)
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"--reference {p}: no such image file (a FLUX run takes files)")
    if len(paths) > 1 and cfg.flux.position_scheme != "uno":
        raise ValueError(
            f"{len(paths)} --reference files: several references are UNO's multi-subject "
            "generation (flux.position_scheme=uno); this run's model takes one"
        )
    size = cfg.flux.resolution
    return reference_batch([paths], load_reference_file, size, keep_aspect=keeps_aspect(cfg))


def _config(run: Path | None, weights: Path | None) -> TrainConfig:
    cfg = run_config(run) if run is not None else load_config(TrainConfig, EMBEDDED_CONFIG, [])
    if weights is not None:
        if cfg.model.kind != "embedded":
            raise ValueError(
                "--weights names an embedded generator file; a FLUX run's model is its "
                "flux.path and checkpoint: drop --weights"
            )
        cfg.model.weights = str(weights)
    return cfg


def _load(cfg: TrainConfig, run: Path | None, ema: bool, *, step: int | None) -> tuple[Policy, str]:
    policy = build_policy(cfg, keep_reference=False)
    if run is None:
        return policy, "base model"
    tensors, is_ema, folder = run_weights(run, step, ema=ema)
    policy.load_trainable_state_dict(tensors)
    return policy, f"{folder.name}, {'EMA' if is_ema else 'raw'} weights"


def policy_from(
    run: Path | None, weights: Path | None, ema: bool = True, *, step: int | None = None
) -> tuple[Policy, TrainConfig]:
    """The base policy and config, or the run's (its latest checkpoint's, or step
    ``step``'s, EMA or raw weights)."""
    cfg = _config(run, weights)
    return _load(cfg, run, ema, step=step)[0], cfg


@torch.no_grad()
def draw(
    policy: Policy,
    cfg: TrainConfig,
    references: References,
    *,
    prompts: list[str],
    num: int,
    steps: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """``num`` images per prompt of the one pair ``references`` (prompt-major), from one
    seeded noise draw, by deterministic sampling with the run's schedule
    (:func:`~cgrpo.run.build.eval_sigmas`) and ``sampler.ode_solver``; one prompt's images
    per batch."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts) * num, *policy.latent_shape()), generator=gen)
    sigmas = eval_sigmas(cfg, steps)
    refs = references.repeat_interleave(num, dim=0)
    out = []
    for i, prompt in enumerate(prompts):
        cond = policy.encode_condition(refs, [prompt] * num)
        x = sample_ode(
            policy, cond, sigmas, noise=noise[i * num : (i + 1) * num],
            solver=cfg.sampler.ode_solver,
        )  # fmt: skip
        out.append(policy.decode(x).cpu())
    return torch.cat(out)


def sample_command(args: argparse.Namespace) -> None:
    if args.num < 1:
        raise ValueError(f"--num {args.num}: give at least 1 image per prompt")
    check_output_file(args.out, "--out", suffixes=(".png", ".jpg", ".jpeg", ".webp"))
    cfg = _config(args.run, args.weights)
    if cfg.model.kind == "embedded":
        if len(args.reference) != 1:
            raise ValueError("the embedded generator takes one --reference (a subject or file)")
        refs: References = load_reference(args.reference[0])
        for p in args.prompt:
            scene.parse_prompt(p)  # clear error for prompts outside the grammar
    else:
        refs = flux_references(args.reference, cfg)
    policy, source = _load(cfg, args.run, not args.raw, step=args.step)
    images = draw(
        policy, cfg, refs, prompts=list(args.prompt), num=args.num, steps=args.steps,
        seed=args.seed,
    )  # fmt: skip
    view = reward_view(refs)
    save_grid(Path(args.out), view.expand(len(images), -1, -1, -1), images, group_size=args.num)
    print(f"wrote {args.out} ({source}): one row per prompt ({', '.join(args.prompt)})")
