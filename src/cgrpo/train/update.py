"""The update phase of a training step, from each reward's group advantages to AdamW.

::

    {A_k} ──► a random subset of the objective's steps (TRUE indices t)
          ──► per t: A_t = shaping({A_k}, weighting.step_weights(t, T, weights, pair), pair)
          ──► the step's samples, shuffled, in grpo.updates_per_rollout chunks; per chunk:
                  objective.loss per (t, micro-batch) ──► backward
                  ──► grad-norm clip ──► AdamW step (+ EMA)
          ──► nft: the old policy's soft update

:class:`UpdatePhase` is one part of :class:`cgrpo.train.trainer.GRPOTrainer` (which builds
the attributes it names); the loop calls :meth:`UpdatePhase.update` once per step.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch

from cgrpo.method.advantages import advantages_by_group
from cgrpo.method.objective import LossContext, Objective
from cgrpo.method.weighting import train_step_indices
from cgrpo.policies.base import Policy
from cgrpo.rewards.set import RewardSet
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist
from cgrpo.sampling.rollout import Rollout
from cgrpo.train.errors import TrainingError
from cgrpo.train.lr_schedule import set_lr
from cgrpo.train.state import TrainState

__all__ = ["UpdatePhase"]


class UpdatePhase:
    """Advantages, shaped advantages and the objective's updates of one step."""

    cfg: TrainConfig
    policy: Policy
    rewards: RewardSet
    objective: Objective
    shaping: Any  # method.shaping: shaping(adv, weights, pair)
    weighting: Any  # method.weighting: step_weights(t, T, weights, pair)
    pair: tuple[str, ...]
    state: TrainState
    dist: Dist
    params: list[torch.nn.Parameter]
    velocity: Any  # the velocity the loss differentiates (through DDP when several)
    shard: slice  # this process's samples of the step

    def advantages(
        self, rewards: dict[str, torch.Tensor], group_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each reward's group advantage, for every sample of the step (all processes')."""
        eps, unbiased = self.cfg.grpo.adv_eps, self.cfg.grpo.std == "unbiased"
        return {
            k: advantages_by_group(r, group_ids, eps, unbiased=unbiased) for k, r in rewards.items()
        }

    def shaped_advantages(
        self, adv: dict[str, torch.Tensor], steps: list[int], num_steps: int
    ) -> dict[int, torch.Tensor]:
        """The shaped advantage of each trained step, weighted at its TRUE index ``t``."""
        base = self.rewards.weights
        return {
            t: self.shaping(
                adv, self.weighting.step_weights(t, num_steps, base, pair=self.pair), self.pair
            )
            for t in steps
        }

    def update(
        self,
        roll: Rollout,
        adv: dict[str, torch.Tensor],
        group_ids: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """The objective's updates on a random subset of its steps, from each reward's
        advantages of the WHOLE step (every process's samples, with their ``group_ids``;
        one process: ``roll.group_ids``). When any chunk's loss is non-finite, nothing of
        the update stays: weights, optimizer, EMA and old policy are as before it
        (``{"nonfinite_loss": 1.0}`` is returned)."""
        obj, gen = self.objective, self.state.generator
        steps = self._steps_to_train(roll)
        noise_seed = int(torch.randint(2**62, (1,), generator=gen)) if obj.forward_noise else 0
        ctx = self._loss_context(noise_seed)
        chunks = self._chunks()
        ids = (roll.group_ids if group_ids is None else group_ids).to(self.policy.device)
        # weights are looked up on the full schedule, at the true index
        shaped = self._shaped_for_loss(adv, ids, steps=steps, num_steps=roll.num_steps)
        lr = set_lr(self.state.optimizer, self.cfg, self.state.step)  # optim.schedule
        snap = self.state.snapshot() if len(chunks) > 1 else None
        optimizer = self.state.optimizer
        totals: dict[str, float] = {}
        count = 0
        grad_norms = []
        for chunk in chunks:
            losses, finite = self._backward(ctx, roll, chunk, steps=steps, shaped=shaped)
            for stats in losses:
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
            count += len(losses)
            gn = self._clipped_grad_norm(finite)
            if gn is None:  # on every process alike: nothing of this update stays
                optimizer.zero_grad(set_to_none=True)
                if snap is not None:
                    self.state.restore(snap)
                return {"nonfinite_loss": 1.0}
            grad_norms.append(gn)
            optimizer.step()
            if self.state.ema is not None:
                self.state.ema.update()
        out = self._mean_over_processes({k: v / max(count, 1) for k, v in totals.items()})
        out["grad_norm"] = float(np.mean(grad_norms))
        out["trained_steps"] = float(len(steps))
        if lr is not None:
            out["lr"] = lr
        if obj.uses_old_policy():
            out["old_decay"] = d = obj.decay(self.state.step + 1)
            self.policy.soft_update_old(d)  # a HasOldPolicy (checked when built)
        return out

    # -- the steps of an update ---------------------------------------------------------------

    def _steps_to_train(self, roll: Rollout) -> list[int]:
        """A random ``grpo.timestep_fraction`` of the objective's steps (grpo: the SDE
        steps), as TRUE indices."""
        obj = self.objective
        pool = obj.trainable_steps(roll)
        if not pool:
            raise TrainingError(
                f"method.objective={obj.kind} has no step to train in this rollout "
                f"(sampler.schedule={self.cfg.sampler.schedule.kind} made no SDE step)"
            )
        pick = train_step_indices(len(pool), self.cfg.grpo.timestep_fraction, self.state.generator)
        return [pool[i] for i in pick.tolist()]

    def _loss_context(self, noise_seed: int) -> LossContext:
        g, s = self.cfg.grpo, self.cfg.sampler
        return LossContext(
            velocity=self.velocity,
            policy=self.policy,
            sampler_kind=s.kind,
            eta=s.eta,
            clip_range=g.clip_range,
            adv_clip=g.adv_clip,
            kl_coef=g.kl_coef,
            noise_seed=noise_seed,
            offset=self.shard.start,
        )

    def _chunks(self) -> list[torch.Tensor]:
        """This process's samples in ``grpo.updates_per_rollout`` chunks (local indices; their
        sizes differ by at most one).

        One shuffle of the whole step's samples, drawn alike on every process (so the
        generator, and with it every later step, does not depend on the process count);
        this process keeps its own samples in that order."""
        cfg = self.cfg
        total = cfg.data.prompts_per_step * cfg.grpo.group_size
        perm = torch.randperm(total, generator=self.state.generator)
        mine = perm[(perm >= self.shard.start) & (perm < self.shard.stop)]
        order = mine - self.shard.start
        return [c for c in order.tensor_split(cfg.grpo.updates_per_rollout) if len(c)]

    def _shaped_for_loss(
        self, adv: dict[str, torch.Tensor], ids: torch.Tensor, *, steps: list[int], num_steps: int
    ) -> dict[int, torch.Tensor]:
        """Per trained step, the shaped advantages as the loss takes them: shaped on the
        whole step, prepared by the objective, then this process's shard."""
        device = self.policy.device
        shaped = self.shaped_advantages({k: a.to(device) for k, a in adv.items()}, steps, num_steps)
        return {t: self.objective.prepare(a, ids)[self.shard] for t, a in shaped.items()}

    def _backward(
        self,
        ctx: LossContext,
        roll: Rollout,
        chunk: torch.Tensor,
        *,
        steps: list[int],
        shaped: dict[int, torch.Tensor],
    ) -> tuple[list[dict[str, float]], bool]:
        """The gradients of one chunk: every trained step, micro-batch by micro-batch;
        returns each loss's stats and whether all losses were finite. A non-finite loss
        still runs its backward (so processes stay in step); the whole update is then
        dropped."""
        self.state.optimizer.zero_grad(set_to_none=True)
        mb = self.cfg.grpo.micro_batch_size or len(chunk)
        work = [(t, lo) for t in steps for lo in range(0, len(chunk), mb)]
        finite, losses = True, []
        what = f"step {self.state.step + 1}, update"
        for j, (t, lo) in enumerate(work):
            idx = chunk[lo : lo + mb].to(self.policy.device)
            # every process runs the same backward passes; DDP syncs on the last one. A loss
            # that raised on any process stops all of them before it (Dist.agree)
            with self.dist.no_sync(sync=j == len(work) - 1):
                loss_of = partial(self.objective.loss, ctx, roll, t, idx=idx, adv=shaped[t][idx])
                loss, stats = self.dist.agree(loss_of, what)
                finite = finite and bool(torch.isfinite(loss))
                (loss * len(idx) / (len(chunk) * len(steps))).backward()
            losses.append(stats)
        return losses, finite

    def _clipped_grad_norm(self, finite: bool) -> float | None:
        """Clip the gradients to ``optim.grad_clip``; their norm, or None when the losses
        (``finite``) or the norm were not finite on any process (all processes agree)."""
        grad_clip = self.cfg.optim.grad_clip
        clip = grad_clip if grad_clip > 0 else float("inf")
        gn = float(self.dist.full(torch.nn.utils.clip_grad_norm_(self.params, clip)))
        finite = finite and math.isfinite(gn)
        return gn if bool(self.dist.gather(torch.tensor([finite])).all()) else None

    def _mean_over_processes(self, stats: dict[str, float]) -> dict[str, float]:
        """The loss stats averaged over processes (as they are with one)."""
        if self.dist.world <= 1:
            return stats
        keys = sorted(stats)
        vals = self.dist.gather(torch.tensor([stats[k] for k in keys], dtype=torch.float64))
        return dict(zip(keys, vals.view(self.dist.world, -1).mean(0).tolist(), strict=True))
