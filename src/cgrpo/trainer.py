"""The one trainer: Customized-GRPO (and its naive-GRPO ablations) on any policy.

One training step, top to bottom (see ``docs/trainer.md``)::

    pairs ──► policy.encode_condition ──► sample_groups: G SDE trajectories per pair
          ──► decode ──► identity and prompt rewards ──► group advantages A_id, A_p
          ──► for t in a random subset of the steps (TRUE indices):
                  (w_id, w_p) = weighting.weights(t, T); A_t = shaping(A_id, A_p, w_id, w_p)
                  re-score the recorded transition t ──► PPO clipped loss (+ KL) ──► backward
          ──► grad-norm clip ──► AdamW step ──► log, images, checkpoint

The model enters through the :class:`~cgrpo.policies.base.Policy` protocol, the method
variant through two strategy objects (shaping, weighting); nothing here knows which.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cgrpo import checkpoint as ckpt
from cgrpo.advantages import advantages_by_group
from cgrpo.compare import paired_difference
from cgrpo.config import config_to_dict, save_config
from cgrpo.data import EmbeddedData, PairSource
from cgrpo.distributed import Dist
from cgrpo.loss import grpo_loss, kl_penalty
from cgrpo.policies.base import Policy
from cgrpo.rewards import RewardModel
from cgrpo.rewards.base import make_reward_on
from cgrpo.rollout import Rollout, sample_groups, sample_ode
from cgrpo.sde import sde_step, sigma_schedule
from cgrpo.shaping import make_shaping, relation_shares
from cgrpo.train_config import TrainConfig
from cgrpo.weighting import make_weighting, train_step_indices


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps); the message says why."""


# ----------------------------------------------------------------------------- builders


def build_policy(cfg: TrainConfig, shard_later: bool = False) -> Policy:
    """The policy named by ``cfg.model`` (the reference copy is kept only when KL is on).

    ``shard_later``: FSDP will shard the FLUX transformer, so it is built in CPU memory and
    each GPU only ever receives its shards (plus one block at a time while sharding)."""
    if cfg.model.kind == "embedded":
        from cgrpo.policies.embedded import EmbeddedPolicy

        return EmbeddedPolicy(
            weights=cfg.model.weights, device=cfg.model.device, keep_reference=cfg.grpo.kl_coef > 0
        )
    from cgrpo.policies.flux import FluxPolicy  # KL reference = the same model, LoRA disabled

    return FluxPolicy(
        cfg.flux, device=cfg.model.device, transformer_device="cpu" if shard_later else None
    )


def build_data(cfg: TrainConfig) -> PairSource:
    """The pair source named by ``cfg.data.kind``."""
    d = cfg.data
    if d.kind == "embedded":
        return EmbeddedData(d.attribute_prob, d.eval_prompts_per_subject, d.eval_seed)
    from cgrpo.datasets import DreamBenchPairs, JsonlPairs, PairsWithEval

    size = cfg.flux.resolution
    if d.kind == "dreambench":
        return DreamBenchPairs(d.root, size, d.prompts_per_subject)
    if d.path is None:
        raise ValueError("data.kind=jsonl needs data.path (a JSONL file of reference/prompt pairs)")
    train = JsonlPairs(d.path, size)
    if d.eval_root:
        return PairsWithEval(train, DreamBenchPairs(d.eval_root, size, d.prompts_per_subject))
    return train


def build_rewards(cfg: TrainConfig) -> tuple[RewardModel, RewardModel]:
    """The two rewards, on the policy's device unless their options say otherwise."""
    r, dev = cfg.rewards, cfg.model.device
    return (
        make_reward_on(r.identity, dev, **r.identity_options),
        make_reward_on(r.prompt, dev, **r.prompt_options),
    )


def build_strategies(cfg: TrainConfig) -> tuple[Callable[..., torch.Tensor], Any]:
    m = cfg.method
    shaping = make_shaping(m.shaping, **({"gamma": m.gamma} if m.shaping == "sars" else {}))
    weighting = make_weighting(
        m.weighting, **({"w_id": m.w_id, "w_prompt": m.w_prompt} if m.weighting == "static" else {})
    )
    return shaping, weighting


# ----------------------------------------------------------------------------- helpers


def score(
    rewards: tuple[RewardModel, RewardModel],
    images: torch.Tensor,
    prompts: list[str],
    references: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity, prompt) rewards of a batch, as float32 CPU tensors."""
    with torch.no_grad():
        r_id = rewards[0](images, prompts, references).float().cpu()
        r_p = rewards[1](images, prompts, references).float().cpu()
    return r_id, r_p


@torch.no_grad()
def evaluate(
    policy: Policy,
    rewards: tuple[RewardModel, RewardModel],
    pairs: tuple[torch.Tensor, list[str], list[str]],
    cfg: TrainConfig,
    grid: Path | None = None,
    dist: Dist | None = None,
    noises: int = 1,
) -> dict[str, Any]:
    """Mean identity and prompt reward on held-out pairs, deterministic (ODE) sampling.

    The noise is fixed by ``data.eval_seed``, so base and trained policy see the same noise.
    With ``grid``, up to 8 subjects x 8 prompts are saved there as a PNG, a row per subject
    (by the main process). With several processes each draws every ``world``-th pair and
    the rewards are gathered, so the figures do not depend on the number of processes.
    ``noises`` draws each pair from that many initial noises (image ``k * pairs + i`` is
    pair ``i`` with noise ``k``); the per-image rewards are returned under ``per_image``,
    so two evaluations can be compared image by image (:func:`paired_change`).
    """
    dist = dist or Dist()
    refs, prompts, names = pairs
    n_pairs = len(prompts)
    if noises > 1:
        refs = refs.repeat(noises, 1, 1, 1)
        prompts, names = prompts * noises, names * noises
    # the grid: up to 8 subjects x their first 8 prompts
    per_name: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        if (n in per_name or len(per_name) < 8) and len(per_name.setdefault(n, [])) < 8:
            per_name[n].append(i)
    show = sorted(i for idx in per_name.values() for i in idx)
    steps = cfg.run.eval_steps or cfg.sampler.num_steps
    sigmas = sigma_schedule(steps, cfg.sampler.shift)
    gen = torch.Generator().manual_seed(cfg.data.eval_seed)
    noise = torch.randn((len(prompts), *policy.latent_shape()), generator=gen)
    # every process samples as many images (padding repeats its last one), so that the
    # forward passes of a sharded (FSDP) policy stay in step; padding is not scored
    mine, real = dist.padded_share(len(prompts))
    chunk = cfg.grpo.micro_batch_size or len(mine)
    results: list[tuple[int, float, float, torch.Tensor | None]] = []
    for lo in range(0, len(mine), chunk):  # chunks bound the memory of large models
        sl = mine[lo : lo + chunk]
        cond = policy.encode_condition(refs[sl], [prompts[i] for i in sl])
        images = policy.decode(sample_ode(policy, cond, sigmas, noise[sl]))
        n = max(0, min(len(sl), real - lo))
        if n == 0:
            continue
        sl, images = sl[:n], images[:n]
        r = score(rewards, images, [prompts[i] for i in sl], refs[sl].to(images.device))
        for j, i in enumerate(sl):
            keep = images[j].cpu() if grid is not None and i in show else None
            results.append((i, float(r[0][j]), float(r[1][j]), keep))
    results = sorted(dist.gather_objects(results), key=lambda x: x[0])
    r_id = torch.tensor([x[1] for x in results])
    r_p = torch.tensor([x[2] for x in results])
    shown = [x[3] for x in results if x[3] is not None]
    if grid is not None and shown and dist.is_main:
        row = len(per_name[names[show[0]]])
        save_grid(grid, refs[show], torch.stack(shown), group_size=row)
    return {
        "identity": float(r_id.mean()),
        "prompt": float(r_p.mean()),
        "identity_std": float(r_id.std()),
        "prompt_std": float(r_p.std()),
        "n": n_pairs,
        "images": len(prompts),
        "per_image": {
            "identity": [round(float(v), 6) for v in r_id],
            "prompt": [round(float(v), 6) for v in r_p],
        },
    }


def paired_change(base: dict[str, Any], trained: dict[str, Any], key: str) -> tuple[float, float]:
    """Mean change of reward ``key`` from ``base`` to ``trained`` and its standard error,
    image by image (same pairs, same noise): ``d = trained - base``, SE = std(d)/sqrt(n)."""
    return paired_difference(trained["per_image"][key], base["per_image"][key])


def save_grid(path: Path, references: torch.Tensor, images: torch.Tensor, group_size: int) -> None:
    """One row per group: its reference, then its G samples (PNG)."""
    from PIL import Image

    groups = images.shape[0] // group_size
    refs = references[::group_size][:groups]
    h, w = images.shape[-2:]
    if refs.shape[-2:] != (h, w):
        refs = torch.nn.functional.interpolate(refs, size=(h, w), mode="bilinear")
    rows = []
    for g in range(groups):
        tiles = [refs[g], torch.ones(3, h, 2)] + list(images[g * group_size : (g + 1) * group_size])
        rows.append(torch.cat(tiles, dim=-1))
    grid = torch.cat(rows, dim=-2).clamp(0, 1)
    arr = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    scale = max(1, 256 // h)
    img = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


class MetricsLog:
    """CSV + tensorboard rows, one per logged step. Rows after a resume point are dropped."""

    def __init__(self, run_dir: Path, resume_step: int = 0, write: bool = True) -> None:
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict[str, float]] = []
        self.write = write  # False on the non-main processes of a multi-process run
        if resume_step and self.path.exists():
            with self.path.open() as f:
                self.rows = [
                    {k: float(v) for k, v in r.items() if v != ""}
                    for r in csv.DictReader(f)
                    if float(r["step"]) <= resume_step
                ]
        self.tb = None
        if not write:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step or None)
        except ImportError:  # tensorboard is a dependency; stay usable without it
            self.tb = None
        self._write()

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, int(row["step"]))
        self._write()

    def _write(self) -> None:
        if not self.write:
            return
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.rows)

        if keys:
            ckpt.atomic_write(self.path, write)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_curves(rows: list[dict[str, float]], path: Path) -> None:
    """Reward curves (mean +- std of each reward) and conflict share, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "reward_identity_mean" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in (
        (axes[0], "reward_identity", "identity reward"),
        (axes[1], "reward_prompt", "prompt reward"),
    ):
        m = np.array([r[f"{key}_mean"] for r in rows])
        s = np.array([r[f"{key}_std"] for r in rows])
        ax.plot(steps, m)
        ax.fill_between(steps, m - s, m + s, alpha=0.2)
        ax.set_title(label)
        ax.set_xlabel("step")
    for name in ("synergy", "conflict", "joint_failure"):
        axes[2].plot(steps, [r[f"share_{name}"] for r in rows], label=name)
    axes[2].set_title("share of samples")
    axes[2].legend()
    axes[2].set_xlabel("step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


@dataclass
class StepResult:
    metrics: dict[str, float]
    skipped: bool
    images: torch.Tensor | None = None
    references: torch.Tensor | None = None


# ----------------------------------------------------------------------------- trainer


class GRPOTrainer:
    """Customized-GRPO training loop over one policy, two rewards and two strategies."""

    def __init__(
        self,
        cfg: TrainConfig,
        policy: Policy | None = None,
        rewards: tuple[RewardModel, RewardModel] | None = None,
        data: PairSource | None = None,
        dist: Dist | None = None,
    ) -> None:
        self.cfg = cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.dist = dist if dist is not None else Dist.from_env(cfg.model.device, cfg.run.fsdp)
        if self.dist.device is not None:  # accelerate gives each process its own device
            cfg.model.device = self.dist.device
        # the global RNG seeds what the policy draws when built (the LoRA's A matrices):
        # the same on every process, so FSDP's shards are pieces of one initialisation
        torch.manual_seed(cfg.run.seed)
        self.policy = policy if policy is not None else build_policy(cfg, self.dist.fsdp)
        self.rewards = rewards if rewards is not None else build_rewards(cfg)
        self.data = data if data is not None else build_data(cfg)
        self.shaping, self.weighting = build_strategies(cfg)
        self.dist.shard_policy(self.policy)  # FSDP: before the optimizer sees the parameters
        self.params = list(self.policy.trainable_parameters())
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            self.params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
        )
        self.ema: list[torch.Tensor] | None = (
            [p.detach().clone() for p in self.params] if o.ema_decay > 0 else None
        )
        self.velocity = self.dist.velocity_fn(self.policy, self.params)  # DDP if several
        self.shard = self.dist.shard(cfg.data.prompts_per_step * cfg.grpo.group_size)
        self.sigmas = sigma_schedule(cfg.sampler.num_steps, cfg.sampler.shift)
        self.run_dir = Path(cfg.run.out_dir)
        self.step = 0
        self.consecutive_skips = 0
        self.total_skips = 0
        self.data_rng = random.Random(cfg.run.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.run.seed)

    # -- one step ---------------------------------------------------------------------------

    def rollout(self) -> tuple[Rollout, torch.Tensor, list[str]]:
        refs, prompts = self.data.sample(self.cfg.data.prompts_per_step, self.data_rng)
        cond = self.policy.encode_condition(refs, prompts)
        s = self.cfg.sampler
        roll = sample_groups(
            self.policy,
            cond,
            self.cfg.grpo.group_size,
            self.sigmas,
            s.eta,
            s.kind,
            s.same_noise,
            self.generator,
            self.cfg.grpo.micro_batch_size or None,
            s.ode_tail,
            self.shard,
        )
        g = self.cfg.grpo.group_size
        refs = refs.repeat_interleave(g, dim=0)[self.shard]
        return roll, refs, [p for p in prompts for _ in range(g)][self.shard]

    def advantages(
        self, r_id: torch.Tensor, r_p: torch.Tensor, group_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Group advantages of every sample of the step (all processes' samples)."""
        eps = self.cfg.grpo.adv_eps
        return advantages_by_group(r_id, group_ids, eps), advantages_by_group(r_p, group_ids, eps)

    def update(self, roll: Rollout, a_id: torch.Tensor, a_p: torch.Tensor) -> dict[str, float]:
        """PPO-clipped updates on a random subset of the recorded transitions."""
        cfg, pol = self.cfg, self.policy
        T = roll.num_steps  # weights are looked up on the full schedule, at the true index
        steps = train_step_indices(roll.num_sde_steps, cfg.grpo.timestep_fraction, self.generator)
        # one shuffle of the whole step's samples, drawn alike on every process (so the
        # generator, and with it every later step, does not depend on the process count);
        # this process keeps its own samples in that order
        total = cfg.data.prompts_per_step * cfg.grpo.group_size
        perm = torch.randperm(total, generator=self.generator)
        mine = perm[(perm >= self.shard.start) & (perm < self.shard.stop)]
        order = mine - self.shard.start
        chunks = [c for c in order.chunk(cfg.grpo.updates_per_rollout) if len(c)]
        a_id, a_p = a_id.to(pol.device), a_p.to(pol.device)
        # the shaped advantage of each trained step, at its TRUE denoising index t
        shaped = {t: self.shaping(a_id, a_p, *self.weighting.weights(t, T)) for t in steps.tolist()}
        totals: dict[str, float] = {}
        count = 0
        grad_norms = []
        for chunk in chunks:
            self.optimizer.zero_grad(set_to_none=True)
            mb = cfg.grpo.micro_batch_size or len(chunk)
            work = [(t, lo) for t in steps.tolist() for lo in range(0, len(chunk), mb)]
            finite = True
            for j, (t, lo) in enumerate(work):
                adv = shaped[t]
                s, s_next = float(roll.sigmas[t]), float(roll.sigmas[t + 1])
                idx = chunk[lo : lo + mb].to(pol.device)
                x = roll.latents[t, idx]
                cond = roll.condition.index(idx)
                sig = torch.full((len(idx),), s, device=pol.device)
                # every process runs the same backward passes; DDP syncs on the last one
                with self.dist.no_sync(sync=j == len(work) - 1):
                    v = self.velocity(x, sig, cond)
                    _, logp, mean, std = sde_step(
                        x,
                        v,
                        s,
                        s_next,
                        cfg.sampler.eta,
                        prev_sample=roll.latents[t + 1, idx],
                        kind=cfg.sampler.kind,
                    )
                    loss, stats = grpo_loss(
                        logp,
                        roll.log_probs[t, idx],
                        adv[idx],
                        cfg.grpo.clip_range,
                        cfg.grpo.adv_clip,
                    )
                    if cfg.grpo.kl_coef > 0:
                        ref_v = pol.reference_velocity(x, sig, cond)
                        _, _, ref_mean, _ = sde_step(
                            x,
                            ref_v,
                            s,
                            s_next,
                            cfg.sampler.eta,
                            prev_sample=roll.latents[t + 1, idx],
                            kind=cfg.sampler.kind,
                        )
                        kl = kl_penalty(mean, ref_mean.detach(), std)
                        loss = loss + cfg.grpo.kl_coef * kl
                        stats["kl"] = kl.item()
                    # a non-finite loss still runs its backward (so processes stay in step);
                    # the whole update is then dropped below
                    finite = finite and bool(torch.isfinite(loss))
                    (loss * len(idx) / (len(chunk) * len(steps))).backward()
                stats["loss"] = loss.item()
                for k, v_ in stats.items():
                    totals[k] = totals.get(k, 0.0) + v_
                count += 1
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            gn = float(self.dist.full(torch.nn.utils.clip_grad_norm_(self.params, clip)))
            finite = bool(self.dist.gather(torch.tensor([finite and math.isfinite(gn)])).all())
            if not finite:  # on every process alike: nothing reaches the optimizer
                self.optimizer.zero_grad(set_to_none=True)
                return {"nonfinite_loss": 1.0}
            grad_norms.append(gn)
            self.optimizer.step()
            self._ema_update()
        out = {k: v / max(count, 1) for k, v in totals.items()}
        if self.dist.world > 1:  # log the mean over processes
            keys = sorted(out)
            vals = self.dist.gather(torch.tensor([out[k] for k in keys], dtype=torch.float64))
            out = dict(zip(keys, vals.view(self.dist.world, -1).mean(0).tolist(), strict=True))
        out["grad_norm"] = float(np.mean(grad_norms))
        out["trained_steps"] = float(len(steps))
        return out

    def _ema_update(self) -> None:
        if self.ema is None:
            return
        d = self.cfg.optim.ema_decay
        with torch.no_grad():
            for e, p in zip(self.ema, self.params, strict=True):
                e.lerp_(p.detach(), 1 - d)

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        roll, refs, prompts = self.rollout()
        t1 = time.perf_counter()
        images = self.policy.decode(roll.final)
        r_id, r_p = score(self.rewards, images, prompts, refs.to(images.device))
        # every process gets the whole step's rewards with their group ids
        r_id, r_p = self.dist.gather(r_id), self.dist.gather(r_p)
        group_ids = self.dist.gather(roll.group_ids.cpu())
        t2 = time.perf_counter()
        metrics: dict[str, float] = {"step": float(self.step + 1)}
        bad = (~torch.isfinite(r_id)).sum().item() + (~torch.isfinite(r_p)).sum().item()
        if bad:
            metrics.update(skipped=1.0, nonfinite_rewards=float(bad))
            return StepResult(metrics, skipped=True)
        a_id, a_p = self.advantages(r_id, r_p, group_ids)
        metrics.update(
            reward_identity_mean=float(r_id.mean()),
            reward_identity_std=float(r_id.std()),
            reward_prompt_mean=float(r_p.mean()),
            reward_prompt_std=float(r_p.std()),
        )
        metrics.update({f"share_{k}": v for k, v in relation_shares(a_id, a_p).items()})
        stats = self.update(roll, a_id[self.shard], a_p[self.shard])
        t3 = time.perf_counter()
        skipped = "nonfinite_loss" in stats
        metrics.update(stats)
        metrics.update(
            skipped=float(skipped), sec_sample=t1 - t0, sec_reward=t2 - t1, sec_update=t3 - t2
        )
        return StepResult(metrics, skipped, images.detach().cpu(), refs.cpu())

    # -- state ------------------------------------------------------------------------------

    def state(self, keep: bool = True) -> dict[str, Any]:
        """Optimizer, EMA, RNG and counters, with full (unsharded) tensors; with FSDP every
        process must call it, and ``keep=False`` ones only help gather (see Dist.full)."""
        py = self.data_rng.getstate()
        full = self.dist.full
        optim = self.optimizer.state_dict()
        optim["state"] = {
            i: {k: full(v, keep) for k, v in s.items()} for i, s in optim["state"].items()
        }
        return {
            "step": self.step,
            "consecutive_skips": self.consecutive_skips,
            "total_skips": self.total_skips,
            "optimizer": optim,
            "ema": None if self.ema is None else [full(e, keep) for e in self.ema],
            "rng": ckpt.get_rng_state(),
            "data_rng": [py[0], list(py[1]), py[2]],
            "generator": self.generator.get_state(),
        }

    def save(self) -> Path | None:
        """Write a checkpoint (main process); every process must call it, since sharded
        (FSDP) tensors are gathered first. Returns its folder on the main process."""
        main = self.dist.is_main  # with FSDP the others help gather, then drop the result
        if not main and not self.dist.fsdp:
            return None
        own = self.policy.trainable_state_dict()
        tensors = {k: self.dist.full(v, main) for k, v in own.items()}
        state = self.state(keep=main)
        if not main:
            return None
        return ckpt.save_checkpoint(
            self.run_dir / "checkpoints",
            self.step,
            tensors,
            state,
            meta={"config": config_to_dict(self.cfg)},
            keep_last=self.cfg.run.keep_last,
        )

    def load(self, path: str | Path) -> None:
        """Restore policy, optimizer, EMA, all RNG states and the step from a checkpoint
        (written by any number of processes, sharded or not)."""
        tensors, state, _ = ckpt.load_checkpoint(path)
        own = self.policy.trainable_state_dict()
        self.policy.load_trainable_state_dict(
            {k: self.dist.like(v, own[k]) if k in own else v for k, v in tensors.items()}
        )
        optim = state["optimizer"]
        for i, s in optim["state"].items():  # moments sharded as their parameter
            p = self.params[int(i)]
            optim["state"][i] = {
                k: self.dist.like(v, p) if torch.is_tensor(v) and v.dim() else v
                for k, v in s.items()
            }
        self.optimizer.load_state_dict(optim)
        ema = state["ema"]
        self.ema = (
            None
            if ema is None
            else [self.dist.like(e, p) for e, p in zip(ema, self.params, strict=True)]
        )
        ckpt.set_rng_state(state["rng"])
        v, internal, gauss = state["data_rng"]
        self.data_rng.setstate((v, tuple(internal), gauss))
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.total_skips = int(state["total_skips"])

    def _evaluate_into(
        self, summary: dict[str, Any], key: str, pairs: tuple[torch.Tensor, list[str], list[str]]
    ) -> None:
        """Evaluate the current policy as ``summary[key]``, save its grid and eval.json."""
        grid = self.run_dir / "images" / f"eval_{key}.png"
        summary[key] = evaluate(
            self.policy, self.rewards, pairs, self.cfg, grid, self.dist, self.cfg.data.eval_noises
        )
        if self.dist.is_main:
            text = json.dumps(summary, indent=2)
            ckpt.atomic_write(self.run_dir / "eval.json", lambda tmp: tmp.write_text(text))

    def ema_swapped(self) -> _Swap:
        return _Swap(self.params, self.ema)

    # -- the loop ---------------------------------------------------------------------------

    def train(self, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
        """Run to ``run.steps``; returns the evaluation summary (base and trained)."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            last = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
            if last is None:
                raise FileNotFoundError(
                    f"--resume: no complete checkpoint under {self.run_dir / 'checkpoints'}; "
                    "start without --resume or point run.out_dir at the run to continue"
                )
            self.load(last)
        main = self.dist.is_main
        if main:
            save_config(cfg, self.run_dir / "config.yaml")
        log = MetricsLog(self.run_dir, self.step if resume else 0, write=main)
        summary_path = self.run_dir / "eval.json"
        summary: dict[str, Any] = (
            json.loads(summary_path.read_text()) if resume and summary_path.exists() else {}
        )
        eval_pairs = self.data.eval_pairs() if cfg.run.eval else None
        if eval_pairs is not None and "base" not in summary:
            self._evaluate_into(summary, "base", eval_pairs)
        bar = tqdm(
            total=cfg.run.steps,
            initial=self.step,
            desc="cgrpo train",
            disable=quiet or not main,
            mininterval=2,
        )
        try:
            while self.step < cfg.run.steps:
                res = self.train_step()
                if res.skipped:
                    self.consecutive_skips += 1
                    self.total_skips += 1
                    res.metrics["total_skips"] = float(self.total_skips)
                    log.log(res.metrics)
                    if self.consecutive_skips >= cfg.run.max_skips:
                        raise TrainingError(
                            f"stopping: {self.consecutive_skips} consecutive steps had non-finite "
                            "rewards or loss (metrics.csv: nonfinite_rewards / nonfinite_loss). "
                            "Check the reward models' inputs and lower optim.lr; "
                            f"run.max_skips={cfg.run.max_skips} sets the limit."
                        )
                    continue
                self.consecutive_skips = 0
                self.step += 1
                if (
                    eval_pairs is not None
                    and cfg.run.eval_every
                    and self.step % cfg.run.eval_every == 0
                ):
                    with self.ema_swapped():
                        ev = evaluate(self.policy, self.rewards, eval_pairs, cfg, dist=self.dist)
                    res.metrics.update(eval_identity=ev["identity"], eval_prompt=ev["prompt"])
                if self.step % cfg.run.log_every == 0 or self.step == cfg.run.steps:
                    log.log(res.metrics)
                bar.update(1)
                bar.set_postfix(
                    id=f"{res.metrics['reward_identity_mean']:.3f}",
                    prompt=f"{res.metrics['reward_prompt_mean']:.3f}",
                )
                if (
                    main
                    and cfg.run.image_every
                    and (self.step % cfg.run.image_every == 0 or self.step == 1)
                ):
                    save_grid(
                        self.run_dir / "images" / f"step_{self.step:06d}.png",
                        res.references,
                        res.images,
                        cfg.grpo.group_size,
                    )
                if (cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0) or (
                    self.step == cfg.run.steps
                ):
                    self.save()  # on every process: sharded tensors are gathered first
        finally:
            bar.close()
            log.close()
        if main:
            plot_curves(log.rows, self.run_dir / "reward_curves.png")
        if eval_pairs is not None:
            summary["steps"] = self.step
            with self.ema_swapped():
                self._evaluate_into(summary, "trained", eval_pairs)
        self.dist.barrier()  # the main process has written everything
        return summary


class _Swap:
    """Context manager: temporarily load the EMA weights into the parameters."""

    def __init__(self, params: list[torch.nn.Parameter], ema: list[torch.Tensor] | None) -> None:
        self.params, self.ema, self.saved = params, ema, None

    def __enter__(self) -> None:
        if self.ema is not None:
            self.saved = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p, e in zip(self.params, self.ema, strict=True):
                    p.copy_(e)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            with torch.no_grad():
                for p, s in zip(self.params, self.saved, strict=True):
                    p.copy_(s)


def summary_table(summary: dict[str, Any]) -> str:
    """The base-vs-trained table ``cgrpo train`` prints at the end."""
    base, trained = summary.get("base"), summary.get("trained")
    if not base or not trained:
        return "(no evaluation)"
    n, images = trained.get("n", 0), trained.get("images", trained.get("n", 0))
    what = f"{n} pairs" if images == n else f"{n} pairs x {images // max(n, 1)} noises"
    lines = [
        f"Held-out evaluation ({what}, deterministic sampling, same noise):",
        f"{'':10s} {'identity':>10s} {'prompt':>10s}",
        f"{'base':10s} {base['identity']:10.4f} {base['prompt']:10.4f}",
        f"{'trained':10s} {trained['identity']:10.4f} {trained['prompt']:10.4f}",
        f"{'change':10s} {trained['identity'] - base['identity']:+10.4f} "
        f"{trained['prompt'] - base['prompt']:+10.4f}",
    ]
    if "per_image" in base and "per_image" in trained:
        se = [paired_change(base, trained, k)[1] for k in ("identity", "prompt")]
        lines.append(f"{'paired SE':10s} {se[0]:10.4f} {se[1]:10.4f}")
        lines.append("(paired SE: standard error of the image-by-image change)")
    return "\n".join(lines)


__all__ = [
    "GRPOTrainer",
    "TrainingError",
    "build_policy",
    "evaluate",
    "paired_change",
    "summary_table",
]
