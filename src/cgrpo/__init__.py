"""cgrpo: Customized-GRPO for subject-driven image generation.

One paper concept per module:

- :mod:`cgrpo.sde`         SDE sampler step and its Gaussian log-prob
- :mod:`cgrpo.advantages`  group-normalised advantages
- :mod:`cgrpo.shaping`     linear and SARS reward shaping
- :mod:`cgrpo.weighting`   static and time-aware (TDW) reward weights
- :mod:`cgrpo.loss`        PPO clipped GRPO loss and KL penalty
- :mod:`cgrpo.rollout`     group sampling with recorded log-probs
- :mod:`cgrpo.schedule`    rollout schedules: which steps are SDE (trained) or ODE
- :mod:`cgrpo.reward_set`  named, weighted rewards
- :mod:`cgrpo.trainer`     the one training loop (components: :mod:`cgrpo.build`)
- :mod:`cgrpo.evaluator`   the one held-out evaluator (training and ``cgrpo eval``)
"""

__version__ = "0.1.0"
