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

The trainer is put together from its parts, each a module of this package:

- here: building the components, a step's rollout and rewards, and :meth:`~GRPOTrainer.train`,
  the loop;
- :mod:`cgrpo.train.update`: advantages, shaped advantages and the objective's updates;
- :mod:`cgrpo.train.hooks`: held-out evaluation, the metrics log, image grids, ``eval.json``;
- :mod:`cgrpo.train.checkpointing`: save, load and resume;
- :mod:`cgrpo.train.state`: what a checkpoint holds besides the weights.

The model enters through the :class:`~cgrpo.policies.base.Policy` protocol, the rewards
as a :class:`~cgrpo.rewards.set.RewardSet`, the method variant through strategy objects
(``cfg.method.shaping`` / ``weighting`` / ``objective``, ``cfg.sampler.schedule``);
nothing here knows which. Components are built by :mod:`cgrpo.run.build`, held-out
evaluation is :class:`cgrpo.eval.evaluator.Evaluator`, what a run writes is
:mod:`cgrpo.io.run_log`.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cgrpo.config.core import save_config
from cgrpo.data.base import PairSource
from cgrpo.data.references import References
from cgrpo.eval.evaluator import EvalPairs, Evaluator, build_evaluator, eval_pairs_of
from cgrpo.io.devices import check_device
from cgrpo.io.interrupts import StopRequested, interruptible
from cgrpo.io.paths import check_output_dir
from cgrpo.io.run_log import MetricsLog
from cgrpo.method.shaping import relation_shares
from cgrpo.policies.base import HasOldPolicy, OldPolicyView, Policy, Shardable
from cgrpo.rewards.set import RewardSet
from cgrpo.run import build
from cgrpo.run.config import TrainConfig
from cgrpo.run.distributed import Dist
from cgrpo.run.memory import check_rollout_memory
from cgrpo.sampling.rollout import Rollout, sample_groups
from cgrpo.sampling.sde import sigma_schedule
from cgrpo.train.checkpointing import Checkpointing
from cgrpo.train.ema import EMA
from cgrpo.train.errors import TrainingError
from cgrpo.train.hooks import EvalLogHooks, StepResult
from cgrpo.train.preemption import Preempted, Preemption
from cgrpo.train.scoring_overlap import OverlappedScoring
from cgrpo.train.state import TrainState
from cgrpo.train.update import UpdatePhase

__all__ = ["GRPOTrainer", "PHASES"]

#: The timed phases of a training step (metrics ``sec_<phase>``).
PHASES = ("sample", "reward", "update")


class GRPOTrainer(UpdatePhase, EvalLogHooks, Checkpointing):
    """Customized-GRPO training loop over one policy, named rewards and two strategies.

    ``cfg`` is copied: the trainer never changes the caller's config."""

    def __init__(
        self,
        cfg: TrainConfig,
        policy: Policy | None = None,
        rewards: RewardSet | None = None,
        *,
        data: PairSource | None = None,
        dist: Dist | None = None,
    ) -> None:
        self.cfg = cfg = copy.deepcopy(cfg)
        # where the run writes and what it runs on, before anything is built or written
        check_output_dir(cfg.run.out_dir, "run.out_dir")
        check_device(cfg.model.device, "model.device")
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.run_dir = Path(cfg.run.out_dir)
        self.dist = dist or Dist.from_env(
            cfg.model.device,
            cfg.run.fsdp,
            cfg.run.log_with,
            logging_dir=str(self.run_dir / "tensorboard"),
        )
        #: accelerate gives each process its own device
        self.device = self.dist.device or cfg.model.device
        # the pairs first: a missing file or training on the evaluation pairs stops the run
        # before any model loads
        self.data = data if data is not None else build.build_data(cfg)
        if policy is None and cfg.model.kind == "flux":
            cfg.flux.check_files()  # before the rewards load
        # the rewards before the policy: a reward that cannot load stops the run before
        # the (12B) transformer does
        self.rewards = rewards if rewards is not None else build.build_rewards(cfg, self.device)
        # the global RNG seeds what the policy draws when built (the LoRA's A matrices):
        # the same on every process, so FSDP's shards are pieces of one initialisation
        torch.manual_seed(cfg.run.seed)
        self.objective = cfg.method.objective
        self.policy = self._build_policy(policy)
        self.shaping, self.weighting = cfg.method.shaping, cfg.method.weighting
        self.pair = tuple(cfg.method.pair)
        self.dist.shard_policy(self.policy)  # FSDP: before the optimizer sees the parameters
        self.params = list(self.policy.trainable_parameters())
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        self.state = self._build_train_state()
        self.velocity = self.dist.velocity_fn(self.policy, self.params)  # DDP if several
        self.shard = self.dist.shard(cfg.data.prompts_per_step * cfg.grpo.group_size)
        check_rollout_memory(  # before the run folder: a step that cannot fit stops here
            self.shard.stop - self.shard.start, cfg.sampler.num_steps,
            tuple(self.policy.latent_shape()), device=self.policy.device,
        )  # fmt: skip
        self.sigmas = sigma_schedule(cfg.sampler.num_steps, cfg.sampler.shift)
        self._saved: tuple[int, int] | None = None  # (step, skips) of the last checkpoint
        self._scoring: OverlappedScoring | None = None  # sampler.overlap_rewards
        self.eval_pairs: EvalPairs | None = None
        self.evaluator: Evaluator | None = None
        self.mid_evaluator: Evaluator | None = None
        if cfg.run.eval:
            self.eval_pairs = eval_pairs_of(self.data)
            self.evaluator = build_evaluator(cfg, self.eval_pairs, self.rewards, dist=self.dist)
            self.mid_evaluator = build_evaluator(
                cfg, self.eval_pairs, self.rewards, dist=self.dist, images_per_pair=1
            )

    def _build_policy(self, policy: Policy | None) -> Policy:
        """The given policy, or the configured one; with the old policy the objective needs
        (made before FSDP shards it: FLUX's old adapter is sharded too)."""
        cfg, obj = self.cfg, self.objective
        if policy is None:
            keep_ref = obj.needs_reference(cfg.grpo.kl_coef)
            policy = build.build_policy(cfg, self.device, self.dist.fsdp, keep_reference=keep_ref)
        if obj.uses_old_policy():
            if not isinstance(policy, HasOldPolicy):
                raise ValueError(
                    f"method.objective={obj.kind} needs an old policy, which "
                    f"{type(policy).__name__} cannot keep (no enable_old_policy()): "
                    "implement cgrpo.policies.base.HasOldPolicy or use method.objective=grpo"
                )
            policy.enable_old_policy()
        return policy

    def _build_train_state(self) -> TrainState:
        """AdamW over the trainable parameters, their EMA (``optim.ema_decay``), the RNGs;
        a :class:`~cgrpo.policies.base.Shardable` policy's root module names them."""
        o = self.cfg.optim
        optimizer = torch.optim.AdamW(
            self.params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
        )
        ema = EMA(self.params, o.ema_decay) if o.ema_decay > 0 else None
        root = self.policy.shard_modules()[0] if isinstance(self.policy, Shardable) else None
        return TrainState(self.params, optimizer, ema, seed=self.cfg.run.seed, module=root)

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
        s, g = self.cfg.sampler, self.cfg.grpo.group_size
        sampler = OldPolicyView(self.policy) if self.objective.samples_with_old() else self.policy
        refs = refs.repeat_interleave(g, dim=0)[self.shard]
        prompts = [p for p in prompts for _ in range(g)][self.shard]
        self._abandon_scoring()  # a rollout whose scores were never collected
        if s.overlap_rewards:
            self._scoring = OverlappedScoring(
                self.policy.decode, self.rewards, references=refs, prompts=prompts
            )
        roll = sample_groups(
            sampler,
            cond,
            g,
            sigmas=self.sigmas,
            eta=s.eta,
            kind=s.kind,
            same_noise=s.same_noise,
            generator=self.state.generator,
            micro_batch_size=self.cfg.grpo.micro_batch_size or None,
            ode_tail=s.ode_tail,
            shard=self.shard,
            reward_image=s.reward_image,
            ode_solver=s.ode_solver,
            sde_mask=s.schedule.sde_mask(
                s.num_steps, s.ode_tail, self.step, generator=self.state.generator
            ),
            on_chunk=self._scoring,
        )
        return roll, refs, prompts

    def _abandon_scoring(self) -> None:
        """Drop the chunks handed to the scoring and cancel their server requests (a
        rollout that failed here or on another process, or whose scores were never
        collected: nobody will read them)."""
        if self._scoring is not None:
            self._scoring.close(abandon=True)
            self._scoring = None

    def _score(
        self, roll: Rollout, refs: References, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This process's images and their rewards, by name."""
        if self._scoring is not None:  # sampler.overlap_rewards: scored while sampling
            scoring, self._scoring = self._scoring, None
            return scoring.result()
        images = self.policy.decode(roll.rewarded)
        return images, self.rewards.score(images, prompts, refs.to(images.device))

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        # a part that raises on any process stops every process with one message
        # (Dist.agree), before the gather below where the others would wait for it
        n = self.step + 1
        try:
            roll, refs, prompts = self.dist.agree(self.rollout, f"step {n}, sampling")
        except BaseException:  # this rollout, or another process's, failed: drop its chunks
            self._abandon_scoring()
            raise
        t1 = time.perf_counter()
        images, scores = self.dist.agree(lambda: self._score(roll, refs, prompts), f"step {n}")
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

    # -- the loop ---------------------------------------------------------------------------

    def train(
        self,
        resume: bool | int | str | Path = False,
        quiet: bool = False,
        *,
        allow_changes: bool = False,
    ) -> dict[str, Any]:
        """Run to ``run.steps``; returns the evaluation summary (base and trained).
        ``resume`` (``--resume``): True continues from the latest checkpoint of
        ``run.out_dir``, a step number from that step's, a path from that checkpoint
        folder (:func:`~cgrpo.train.checkpointing.resume_checkpoint`).

        On SIGTERM / SIGUSR1 / Ctrl-C the step in flight finishes (or, waiting on a judge
        or evaluating, is abandoned), a checkpoint of the last complete step is written and
        :class:`~cgrpo.train.preemption.Preempted` is raised (``--resume`` continues
        exactly); a second Ctrl-C stops at once."""
        cfg, main = self.cfg, self.dist.is_main
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._clear_stale()  # what a killed run left: temp files and folders
        if resume:  # with this run's settings (allow_changes: --allow-changes)
            self._resume(resume, allow_changes=allow_changes)
        if main:
            save_config(cfg, self.run_dir / "config.yaml")
        log = MetricsLog(
            self.run_dir,
            self.step if resume else 0,
            main,
            log_with=cfg.run.log_with,
            accelerator=self.dist.accelerator,
        )
        # nothing is abandoned but what interruptible() marks: judge requests, evaluations
        with Preemption() as preempt, interruptible(False):
            self._stable_rng = self.state.rng_snapshot()
            try:
                summary = self._run(log, preempt, resume=bool(resume), quiet=quiet)
            except StopRequested as stop:
                self.state.restore_rng(self._stable_rng)  # as at the last complete step
                self._save_unless_saved()
                raise Preempted(self.step, stop.signum) from None
            finally:
                log.close()
        self.dist.barrier()  # the main process has written everything
        return summary

    def _run(
        self, log: MetricsLog, preempt: Preemption, *, resume: bool, quiet: bool
    ) -> dict[str, Any]:
        """The base evaluation, the steps to ``run.steps`` (checkpointing as due), the
        trained evaluation; returns the evaluation summary."""
        cfg, st, main = self.cfg, self.state, self.dist.is_main
        with interruptible():  # a stop signal abandons the truth's scoring, base evaluation
            summary = self._begin_summary(resume)  # eval.json so far, truth, base evaluation
        bar = tqdm(
            total=cfg.run.steps, initial=self.step, desc="cgrpo train",
            disable=quiet or not main, mininterval=2,
        )  # fmt: skip
        try:
            while self.step < cfg.run.steps and not self._out_of_time():
                self._stable_rng = st.rng_snapshot()
                res = self.train_step()
                if res.skipped:
                    self._skipped(res, log)
                else:
                    skips, st.consecutive_skips = st.consecutive_skips, 0
                    st.step += 1
                    st.train_seconds += sum(res.metrics[f"sec_{k}"] for k in PHASES)
                    self._stable_rng = st.rng_snapshot()
                    self._after_step(res, log, skips)  # evaluate, log, images
                    if self._checkpoint_due():
                        self.save()  # on every process: sharded tensors are gathered
                    bar.update(1)
                    names = self.rewards.names[:2]
                    bar.set_postfix({n: f"{res.metrics[f'reward/{n}/mean']:.3f}" for n in names})
                if self._preempted(preempt):
                    self._save_unless_saved()
                    raise Preempted(self.step, preempt.signum or 15)
            if self.step < cfg.run.steps:
                self._save_unless_saved()  # stopped by run.time_budget
        finally:
            bar.close()
        self._end_summary(summary, log)  # reward curves, trained evaluation
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
