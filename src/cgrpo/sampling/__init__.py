"""Floor 5 (strategies): the SDE sampler step and its log-prob, rollout schedules, group
rollouts with recorded log-probs (training and evaluation both sample through here).
"""
