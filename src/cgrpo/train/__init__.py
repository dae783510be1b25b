"""Floor 9: the training loop and what it keeps: train state (checkpoints), EMA, preemption."""
