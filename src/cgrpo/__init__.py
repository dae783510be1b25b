"""cgrpo: Customized-GRPO for subject-driven image generation.

Packages by layer, imports pointing down only (``tests/test_layout.py`` checks it):

==============  ================================================================
floor           packages
==============  ================================================================
entry           ``cli``, ``docs``, :mod:`cgrpo.experiments`
train           :mod:`cgrpo.train` (the loop, train state, EMA, preemption)
eval            :mod:`cgrpo.eval` (the one held-out evaluator, ``cgrpo eval``)
run             :mod:`cgrpo.run` (TrainConfig, build, distributed)
method          :mod:`cgrpo.method` (advantages, shaping, weighting, loss, objectives)
sampling        :mod:`cgrpo.sampling` (SDE step, schedules, rollout)
components      :mod:`cgrpo.policies`, :mod:`cgrpo.rewards`, :mod:`cgrpo.data`,
                :mod:`cgrpo.world`
foundation      :mod:`cgrpo.config`, :mod:`cgrpo.io`
==============  ================================================================
"""

__version__ = "0.1.0"
