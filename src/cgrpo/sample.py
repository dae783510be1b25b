"""``cgrpo sample``: images for a reference and prompts, from the base model or a run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cgrpo.checkpoint import latest_checkpoint, load_checkpoint
from cgrpo.data import images_to_tensor
from cgrpo.policies.embedded import EmbeddedPolicy
from cgrpo.rollout import sample_ode
from cgrpo.sde import sigma_schedule
from cgrpo.trainer import save_grid
from cgrpo.world import scene


def load_reference(spec: str) -> torch.Tensor:
    """(1,3,32,32) reference from a subject name or an image file."""
    path = Path(spec)
    if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"}:
        from PIL import Image, UnidentifiedImageError

        if not path.is_file():
            raise FileNotFoundError(f"reference image {path} does not exist")
        try:
            img = Image.open(path).convert("RGB").resize((scene.IMAGE_SIZE, scene.IMAGE_SIZE))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"reference image {path} cannot be read ({e}); give a PNG/JPEG") from e
        return images_to_tensor([np.asarray(img, dtype=np.float32) / 255])
    return images_to_tensor([scene.reference_image(scene.subject_by_name(spec))])


def policy_from(run: Path | None, weights: Path | None) -> EmbeddedPolicy:
    """The base policy, or the one in ``run``'s latest checkpoint."""
    policy = EmbeddedPolicy(weights=weights)
    if run is not None:
        last = latest_checkpoint(Path(run) / "checkpoints")
        if last is None:
            raise FileNotFoundError(f"no complete checkpoint under {run}/checkpoints")
        tensors, _, _ = load_checkpoint(last)
        policy.load_trainable_state_dict(tensors)
    return policy


def sample_command(args: argparse.Namespace) -> None:
    policy = policy_from(args.run, args.weights)
    ref = load_reference(args.reference)
    prompts = [p for p in args.prompt for _ in range(args.num)]
    for p in args.prompt:
        scene.parse_prompt(p)  # clear error for prompts outside the grammar
    refs = ref.repeat(len(prompts), 1, 1, 1)
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn((len(prompts), *policy.latent_shape()), generator=gen)
    cond = policy.encode_condition(refs, prompts)
    images = policy.decode(sample_ode(policy, cond, sigma_schedule(args.steps, 3.0), noise))
    save_grid(Path(args.out), refs, images, args.num)
    print(f"wrote {args.out}: one row per prompt ({', '.join(args.prompt)})")
