"""The training loop: Customized-GRPO (and its naive-GRPO ablations) on any policy.

One training step, top to bottom (see ``docs/trainer.md``)::

    pairs ──► policy.encode_condition ──► sample_groups: G SDE trajectories per pair
          ──► decode ──► the named rewards ──► a group advantage A_k per reward
          ──► for t in a random subset of the objective's steps (TRUE indices):
                  w = weighting.step_weights(t, T, static weights, pair)
                  A_t = shaping({A_k}, w, pair)
                  objective.loss: grpo re-scores the recorded transition t (PPO clipped
                  loss + KL); nft noises the final sample to sigma_t and regresses it
                  ──► backward
          ──► grad-norm clip ──► AdamW step (+ EMA, + nft's old-policy soft update)
          ──► hooks: evaluate, log, save

The model enters through the :class:`~cgrpo.policies.base.Policy` protocol, the rewards
as a :class:`~cgrpo.rewards.set.RewardSet`, the method variant through strategy objects
(``cfg.method.shaping`` / ``weighting`` / ``objective``, ``cfg.sampler.schedule``);
nothing here knows which.
Components are built by :mod:`cgrpo.run.build`, held-out evaluation is
:class:`cgrpo.eval.evaluator.Evaluator`, what a run writes is :mod:`cgrpo.io.run_log`, what a
checkpoint holds is :class:`cgrpo.train.state.TrainState`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cgrpo.config.core import config_to_dict, save_config
from cgrpo.data.base import PairSource
from cgrpo.data.references import References, reward_view
from cgrpo.eval.evaluator import EvalPairs, Evaluator, build_evaluator, eval_pairs_of, grid_items
from cgrpo.io import checkpoint as ckpt
from cgrpo.io.atomic import atomic_write
from cgrpo.io.run_log import MetricsLog, plot_curves, save_grid
from cgrpo.method.advantages import advantages_by_group
from cgrpo.method.objective import LossContext
from cgrpo.method.shaping import relation_shares
from cgrpo.method.weighting import train_step_indices
from cgrpo.policies.base import HasOldPolicy, OldPolicyView, Policy
from cgrpo.rewards.set import RewardSet
from cgrpo.run import build
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist
from cgrpo.sampling.rollout import Rollout, sample_groups
from cgrpo.sampling.sde import sigma_schedule
from cgrpo.train.ema import EMA
from cgrpo.train.preemption import Preempted, Preemption
from cgrpo.train.state import TrainState

__all__ = ["GRPOTrainer", "PHASES", "StepResult", "TrainingError"]

#: The timed phases of a training step (metrics ``sec_<phase>``).
PHASES = ("sample", "reward", "update")


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps); the message says why."""


@dataclass
class StepResult:
    metrics: dict[str, float]
    skipped: bool
    images: torch.Tensor | None = None
    references: References | None = None


class GRPOTrainer:
    """Customized-GRPO training loop over one policy, named rewards and two strategies.

    ``cfg`` is copied: the trainer never changes the caller's config."""

    def __init__(
        self,
        cfg: TrainConfig,
        policy: Policy | None = None,
        rewards: RewardSet | None = None,
        data: PairSource | None = None,
        dist: Dist | None = None,
    ) -> None:
        self.cfg = cfg = copy.deepcopy(cfg)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.run_dir = Path(cfg.run.out_dir)
        self.dist = dist or Dist.from_env(
            cfg.model.device, cfg.run.fsdp, cfg.run.log_with, str(self.run_dir / "tensorboard")
        )
        #: accelerate gives each process its own device
        self.device = self.dist.device or cfg.model.device
        # the global RNG seeds what the policy draws when built (the LoRA's A matrices):
        # the same on every process, so FSDP's shards are pieces of one initialisation
        torch.manual_seed(cfg.run.seed)
        self.objective = cfg.method.objective
        keep_ref = self.objective.needs_reference(cfg.grpo.kl_coef)
        self.policy = (
            policy
            if policy is not None
            else build.build_policy(cfg, self.device, self.dist.fsdp, keep_reference=keep_ref)
        )
        if self.objective.uses_old_policy():
            if not isinstance(self.policy, HasOldPolicy):
                raise ValueError(
                    f"method.objective={self.objective.kind} needs an old policy, which "
                    f"{type(self.policy).__name__} cannot keep (no enable_old_policy()): "
                    "implement cgrpo.policies.base.HasOldPolicy or use method.objective=grpo"
                )
            self.policy.enable_old_policy()  # before FSDP: FLUX's old adapter is sharded too
        self.rewards = rewards if rewards is not None else build.build_rewards(cfg, self.device)
        self.data = data if data is not None else build.build_data(cfg)
        self.shaping, self.weighting = cfg.method.shaping, cfg.method.weighting
        self.pair = tuple(cfg.method.pair)
        self.dist.shard_policy(self.policy)  # FSDP: before the optimizer sees the parameters
        self.params = list(self.policy.trainable_parameters())
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        o = cfg.optim
        optimizer = torch.optim.AdamW(
            self.params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
        )
        ema = EMA(self.params, o.ema_decay) if o.ema_decay > 0 else None
        shard_modules = getattr(self.policy, "shard_modules", None)
        root = shard_modules()[0] if callable(shard_modules) else None
        self.state = TrainState(self.params, optimizer, ema, cfg.run.seed, root)
        self.velocity = self.dist.velocity_fn(self.policy, self.params)  # DDP if several
        self.shard = self.dist.shard(cfg.data.prompts_per_step * cfg.grpo.group_size)
        self.sigmas = sigma_schedule(cfg.sampler.num_steps, cfg.sampler.shift)
        self._saved: tuple[int, int] | None = None  # (step, skips) of the last checkpoint
        self.eval_pairs: EvalPairs | None = None
        self.evaluator: Evaluator | None = None  # base and final: data.eval_noises per pair
        self.mid_evaluator: Evaluator | None = None  # every run.eval_every steps: the first
        if cfg.run.eval:
            self.eval_pairs = eval_pairs_of(self.data)
            self.evaluator = build_evaluator(cfg, self.eval_pairs, self.rewards, self.dist)
            self.mid_evaluator = build_evaluator(
                cfg, self.eval_pairs, self.rewards, self.dist, images_per_pair=1
            )

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.state.optimizer

    @property
    def step(self) -> int:
        return self.state.step

    # -- one step ---------------------------------------------------------------------------

    def rollout(self) -> tuple[Rollout, References, list[str]]:
        refs, prompts = self.data.sample(self.cfg.data.prompts_per_step, self.state.data_rng)
        cond = self.policy.encode_condition(refs, prompts)
        s = self.cfg.sampler
        sampler = OldPolicyView(self.policy) if self.objective.samples_with_old() else self.policy
        roll = sample_groups(
            sampler,
            cond,
            self.cfg.grpo.group_size,
            self.sigmas,
            s.eta,
            s.kind,
            s.same_noise,
            self.state.generator,
            self.cfg.grpo.micro_batch_size or None,
            s.ode_tail,
            self.shard,
            s.schedule.sde_mask(s.num_steps, s.ode_tail, self.step, self.state.generator),
        )
        g = self.cfg.grpo.group_size
        refs = refs.repeat_interleave(g, dim=0)[self.shard]
        return roll, refs, [p for p in prompts for _ in range(g)][self.shard]

    def advantages(
        self, rewards: dict[str, torch.Tensor], group_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each reward's group advantage, for every sample of the step (all processes')."""
        eps, unbiased = self.cfg.grpo.adv_eps, self.cfg.grpo.std == "unbiased"
        return {k: advantages_by_group(r, group_ids, eps, unbiased) for k, r in rewards.items()}

    def shaped_advantages(
        self, adv: dict[str, torch.Tensor], steps: list[int], num_steps: int
    ) -> dict[int, torch.Tensor]:
        """The shaped advantage of each trained step, weighted at its TRUE index ``t``."""
        base = self.rewards.weights
        return {
            t: self.shaping(
                adv, self.weighting.step_weights(t, num_steps, base, self.pair), self.pair
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
        cfg, pol, obj = self.cfg, self.policy, self.objective
        gen = self.state.generator
        T = roll.num_steps  # weights are looked up on the full schedule, at the true index
        # a random subset of the objective's steps (grpo: the SDE steps), at TRUE indices
        pool = obj.trainable_steps(roll)
        if not pool:
            raise TrainingError(
                f"method.objective={obj.kind} has no step to train in this rollout "
                f"(sampler.schedule={cfg.sampler.schedule.kind} made no SDE step)"
            )
        pick = train_step_indices(len(pool), cfg.grpo.timestep_fraction, gen).tolist()
        steps = [pool[i] for i in pick]
        noise_seed = int(torch.randint(2**62, (1,), generator=gen)) if obj.forward_noise else 0
        g, s = cfg.grpo, cfg.sampler
        ctx = LossContext(
            self.velocity, pol, s.kind, s.eta, g.clip_range, g.adv_clip, g.kl_coef,
            noise_seed, self.shard.start,
        )  # fmt: skip
        # one shuffle of the whole step's samples, drawn alike on every process (so the
        # generator, and with it every later step, does not depend on the process count);
        # this process keeps its own samples in that order
        total = cfg.data.prompts_per_step * cfg.grpo.group_size
        perm = torch.randperm(total, generator=gen)
        mine = perm[(perm >= self.shard.start) & (perm < self.shard.stop)]
        order = mine - self.shard.start
        chunks = [c for c in order.chunk(cfg.grpo.updates_per_rollout) if len(c)]
        ids = (roll.group_ids if group_ids is None else group_ids).to(pol.device)
        shaped = {
            t: obj.prepare(a, ids)[self.shard]  # shaped on the whole step, then this shard's
            for t, a in self.shaped_advantages(
                {k: a.to(pol.device) for k, a in adv.items()}, steps, T
            ).items()
        }
        snap = self.state.snapshot() if len(chunks) > 1 else None
        totals: dict[str, float] = {}
        count = 0
        grad_norms = []
        for chunk in chunks:
            self.optimizer.zero_grad(set_to_none=True)
            mb = cfg.grpo.micro_batch_size or len(chunk)
            work = [(t, lo) for t in steps for lo in range(0, len(chunk), mb)]
            finite = True
            for j, (t, lo) in enumerate(work):
                idx = chunk[lo : lo + mb].to(pol.device)
                # every process runs the same backward passes; DDP syncs on the last one
                with self.dist.no_sync(sync=j == len(work) - 1):
                    loss, stats = obj.loss(ctx, roll, t, idx, shaped[t][idx])
                    # a non-finite loss still runs its backward (so processes stay in step);
                    # the whole update is then dropped below
                    finite = finite and bool(torch.isfinite(loss))
                    (loss * len(idx) / (len(chunk) * len(steps))).backward()
                for k, v_ in stats.items():
                    totals[k] = totals.get(k, 0.0) + v_
                count += 1
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            gn = float(self.dist.full(torch.nn.utils.clip_grad_norm_(self.params, clip)))
            finite = bool(self.dist.gather(torch.tensor([finite and math.isfinite(gn)])).all())
            if not finite:  # on every process alike: nothing of this update stays
                self.optimizer.zero_grad(set_to_none=True)
                if snap is not None:
                    self.state.restore(snap)
                return {"nonfinite_loss": 1.0}
            grad_norms.append(gn)
            self.optimizer.step()
            if self.state.ema is not None:
                self.state.ema.update()
        out = {k: v / max(count, 1) for k, v in totals.items()}
        if self.dist.world > 1:  # log the mean over processes
            keys = sorted(out)
            vals = self.dist.gather(torch.tensor([out[k] for k in keys], dtype=torch.float64))
            out = dict(zip(keys, vals.view(self.dist.world, -1).mean(0).tolist(), strict=True))
        out["grad_norm"] = float(np.mean(grad_norms))
        out["trained_steps"] = float(len(steps))
        if obj.uses_old_policy():
            out["old_decay"] = d = obj.decay(self.step + 1)
            pol.soft_update_old(d)
        return out

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        roll, refs, prompts = self.rollout()
        t1 = time.perf_counter()
        images = self.policy.decode(roll.final)
        scores = self.rewards.score(images, prompts, refs.to(images.device))
        # every process gets the whole step's rewards with their group ids
        scores = {k: self.dist.gather(v) for k, v in scores.items()}
        group_ids = self.dist.gather(roll.group_ids.cpu())
        t2 = time.perf_counter()
        metrics: dict[str, float] = {}
        bad = sum(int((~torch.isfinite(v)).sum()) for v in scores.values())
        if bad:
            metrics.update(nonfinite_rewards=float(bad))
            return StepResult(metrics, skipped=True)
        adv = self.advantages(scores, group_ids)
        for k, v in scores.items():
            metrics[f"reward/{k}/mean"] = float(v.mean())
            metrics[f"reward/{k}/std"] = float(v.std())
        if all(n in adv for n in self.pair):
            shares = relation_shares(adv[self.pair[0]], adv[self.pair[1]])
            metrics.update({f"share/{k}": v for k, v in shares.items()})
        stats = self.update(roll, adv, group_ids)
        t3 = time.perf_counter()
        skipped = "nonfinite_loss" in stats
        metrics.update(stats)
        metrics.update(sec_sample=t1 - t0, sec_reward=t2 - t1, sec_update=t3 - t2)
        return StepResult(metrics, skipped, images.detach().cpu(), refs.cpu())

    # -- checkpoints --------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write a checkpoint (main process): the raw trainable weights, the EMA weights
        (when on) and the :class:`TrainState`. Every process must call it, since sharded
        (FSDP) tensors are gathered first. Returns its folder on the main process."""
        self._saved = (self.step, self.state.total_skips)
        main = self.dist.is_main  # with FSDP the others help gather, then drop the result
        if not main and not self.dist.fsdp:
            return None
        full = self.dist.full
        tensors = {k: full(v, main) for k, v in self.policy.trainable_state_dict().items()}
        ema = None
        if self.state.ema is not None:
            with self.state.ema.swapped():
                ema = {k: full(v, main) for k, v in self.policy.trainable_state_dict().items()}
        state = self.state.state_dict(self.dist, keep=main)
        if self.objective.uses_old_policy():
            old = self.policy.old_state_dict()
            state["old_policy"] = {k: full(v, main) for k, v in old.items()}
        if not main:
            return None
        return ckpt.save_checkpoint(
            self.run_dir / "checkpoints",
            self.step,
            tensors,
            state,
            meta={"config": config_to_dict(self.cfg)},
            keep_last=self.cfg.run.keep_last,
            ema_tensors=ema,
        )

    def load(self, path: str | Path) -> None:
        """Restore policy, optimizer, EMA, all RNG states and the step from a checkpoint
        (written by any number of processes, sharded or not)."""
        tensors, state, _ = ckpt.load_checkpoint(path)
        own = self.policy.trainable_state_dict()
        self.policy.load_trainable_state_dict(
            {k: self.dist.like(v, own[k]) if k in own else v for k, v in tensors.items()}
        )
        self.state.load_state_dict(state, self.dist)
        if self.objective.uses_old_policy():
            if "old_policy" not in state:
                raise ValueError(
                    f"checkpoint '{path}' holds no old policy, which method.objective="
                    f"{self.objective.kind} needs: resume with the run's own config"
                )
            own_old = self.policy.old_state_dict()
            self.policy.load_old_state_dict(
                {k: self.dist.like(v, own_old[k]) for k, v in state["old_policy"].items()}
            )

    def ema_swapped(self) -> contextlib.AbstractContextManager[Any]:
        """Within the block the policy holds the EMA weights (no-op without EMA)."""
        return self.state.ema.swapped() if self.state.ema else contextlib.nullcontext()

    # -- hooks ----------------------------------------------------------------------------

    def evaluate(self, grid: Path | None = None, mid_run: bool = False) -> dict[str, Any]:
        """Held-out evaluation of the current weights (EMA when on); with ``grid`` the
        first draw of up to 8 subjects x 8 prompts is saved there (main process).
        ``mid_run``: only the first of each pair's draws (cheaper; the same images)."""
        ev = self.mid_evaluator if mid_run else self.evaluator
        assert ev is not None and self.eval_pairs is not None
        items, width = grid_items(self.eval_pairs, ev.k)
        with self.ema_swapped():
            res = ev.run(self.policy, keep=items if grid else ())
        if grid is not None and self.dist.is_main and items:
            refs = self.eval_pairs.references[[j // ev.k for j in items]]
            save_grid(grid, reward_view(refs), torch.stack([res.kept[j] for j in items]), width)
        return res.summary()

    def _evaluate_into(self, summary: dict[str, Any], key: str) -> None:
        summary[key] = self.evaluate(self.run_dir / "images" / f"eval_{key}.png")
        if self.dist.is_main:
            text = json.dumps(summary, indent=2)
            atomic_write(self.run_dir / "eval.json", lambda tmp: tmp.write_text(text))

    def _after_step(self, res: StepResult, log: MetricsLog, skips: int) -> None:
        """Evaluate, log, write images, checkpoint, as the run's intervals say."""
        cfg, step = self.cfg.run, self.step
        row: dict[str, float] = {"step": float(step), **res.metrics}
        row.update(skips=float(skips), total_skips=float(self.state.total_skips))
        evaluated = self.evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0
        if evaluated:
            ev = self.evaluate(mid_run=True)
            row.update({f"eval/{k}": v for k, v in ev["overall"].items()})
        if evaluated or step % cfg.log_every == 0 or step == cfg.steps:
            log.log(row)
        if self.dist.is_main and cfg.image_every and (step % cfg.image_every == 0 or step == 1):
            path = self.run_dir / "images" / f"step_{step:06d}.png"
            save_grid(path, reward_view(res.references), res.images, self.cfg.grpo.group_size)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
            self.save()  # on every process: sharded tensors are gathered first

    # -- the loop ---------------------------------------------------------------------------

    def train(self, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
        """Run to ``run.steps``; returns the evaluation summary (base and trained).

        On SIGTERM / SIGUSR1 the step in flight finishes, a checkpoint is written and
        :class:`~cgrpo.train.preemption.Preempted` is raised (``--resume`` continues exactly)."""
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
        log = MetricsLog(
            self.run_dir, self.step if resume else 0, main, cfg.run.log_with, self.dist.accelerator
        )
        summary_path = self.run_dir / "eval.json"
        summary: dict[str, Any] = (
            json.loads(summary_path.read_text()) if resume and summary_path.exists() else {}
        )
        if self.evaluator is not None and "truth" not in summary:
            truth = self.evaluator.truth_summary()  # it does not change: scored once
            if truth is not None:
                summary["truth"] = truth
        if self.evaluator is not None and "base" not in summary:
            self._evaluate_into(summary, "base")
        bar = tqdm(
            total=cfg.run.steps, initial=self.step, desc="cgrpo train",
            disable=quiet or not main, mininterval=2,
        )  # fmt: skip
        try:
            with Preemption() as preempt:
                while self.step < cfg.run.steps and not self._out_of_time():
                    res = self.train_step()
                    if res.skipped:
                        self._skipped(res, log)
                    else:
                        skips, self.state.consecutive_skips = self.state.consecutive_skips, 0
                        self.state.step += 1
                        m = res.metrics
                        self.state.train_seconds += sum(m[f"sec_{k}"] for k in PHASES)
                        self._after_step(res, log, skips)
                        bar.update(1)
                        names = self.rewards.names[:2]
                        bar.set_postfix(
                            {n: f"{res.metrics[f'reward/{n}/mean']:.3f}" for n in names}
                        )
                    if self._preempted(preempt):
                        if self._saved != (self.step, self.state.total_skips):
                            self.save()  # (not again when this step's checkpoint is written)
                        raise Preempted(self.step, preempt.signum or 15)
                if self.step < cfg.run.steps and self._saved != (self.step, self.state.total_skips):
                    self.save()  # stopped by run.time_budget: its last step is checkpointed
        finally:
            bar.close()
            log.close()
        if main:
            plot_curves(log.rows, self.run_dir / "reward_curves.png", self.rewards.names)
        if self.evaluator is not None:
            summary["steps"] = self.step
            summary["train_seconds"] = self.state.train_seconds
            self._evaluate_into(summary, "trained")
        self.dist.barrier()  # the main process has written everything
        return summary

    def _skipped(self, res: StepResult, log: MetricsLog) -> None:
        """A step whose rewards or loss were not finite: nothing was updated; it is counted
        into the next logged row, and the run stops after ``run.max_skips`` in a row."""
        st = self.state
        st.consecutive_skips += 1
        st.total_skips += 1
        if st.consecutive_skips >= self.cfg.run.max_skips:
            row = {"step": float(st.step + 1), **res.metrics, "skips": float(st.consecutive_skips)}
            log.log({**row, "total_skips": float(st.total_skips)})
            raise TrainingError(
                f"stopping: {st.consecutive_skips} consecutive steps had non-finite "
                "rewards or loss (metrics.csv: nonfinite_rewards / nonfinite_loss). "
                "Check the reward models' inputs and lower optim.lr; "
                f"run.max_skips={self.cfg.run.max_skips} sets the limit."
            )

    def _out_of_time(self) -> bool:
        """Whether ``run.time_budget`` is spent (the slowest process decides, so all agree)."""
        budget = self.cfg.run.time_budget
        if budget <= 0:
            return False
        spent = torch.tensor([self.state.train_seconds], dtype=torch.float64)
        if self.dist.world > 1:
            spent = self.dist.gather(spent).max()
        return float(spent) >= budget

    def _preempted(self, preempt: Preemption) -> bool:
        """Whether any process got a preemption signal (all processes agree)."""
        flag = torch.tensor([preempt.requested])
        return bool(self.dist.gather(flag).any()) if self.dist.world > 1 else bool(flag)
