"""The learning-efficiency experiment's calibration: flow-matching fine-tuning of the base
on ground-truth renders of random training pairs (no copy bias), for the same wall-clock
budget as the methods, written as a run folder ``cgrpo eval`` reads."""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path

__all__ = ["supervised"]


def supervised(cfg, budget: float) -> None:
    """Flow-matching fine-tune of the base on ground-truth renders (no copy bias), the
    embedded default's optimizer and samples per step, until ``budget`` seconds; written
    as a run folder (config, checkpoint, metrics.csv with sec_update) for ``cgrpo eval``."""
    import torch

    from cgrpo.config.core import config_to_dict, save_config
    from cgrpo.io import checkpoint as ckpt
    from cgrpo.run.build import build_policy, subject_split
    from cgrpo.world.pretrain import PretrainConfig, flow_matching_loss, make_batch

    torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
    torch.manual_seed(cfg.run.seed)
    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    policy = build_policy(cfg, keep_reference=False)
    model, tok = policy.model, policy.tokenizer
    o = cfg.optim
    opt = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay
    )
    rng = random.Random(cfg.run.seed)
    subjects = list(subject_split(cfg).train)  # the base's training subjects
    pcfg = PretrainConfig(copy_colour_prob=0.0, copy_background_prob=0.0)
    batch = cfg.data.prompts_per_step * cfg.grpo.group_size
    spent, step, rows = 0.0, 0, []
    while spent < budget:
        t0 = time.perf_counter()
        prompts, refs, x0 = make_batch(rng, subjects, batch, cfg=pcfg)
        loss = flow_matching_loss(model, tok, prompts, refs=refs, x0=x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        dt = time.perf_counter() - t0
        spent, step = spent + dt, step + 1
        rows.append({"step": step, "loss": loss.item(), "sec_sample": 0.0, "sec_reward": 0.0,
                     "sec_update": dt})  # fmt: skip
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ckpt.save_checkpoint(
        run_dir / "checkpoints", step, policy.trainable_state_dict(), state={"step": step},
        meta={"config": config_to_dict(cfg)}, keep_last=1,
    )  # fmt: skip
