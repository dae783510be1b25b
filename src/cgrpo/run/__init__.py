"""Floor 7: what a run is made of: its typed config tree (:class:`~cgrpo.run.config.TrainConfig`),
the components built from it (policy, data, rewards), and where its processes sit
(accelerate, DDP / FSDP2).
"""
