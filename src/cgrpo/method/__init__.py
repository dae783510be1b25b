"""Floor 6 (strategies): the paper as pure tensor functions and strategies: group-normalised
advantages, reward shaping (linear, SARS), reward weighting (static, TDW), the clipped
loss, objectives (GRPO, NFT).
"""
