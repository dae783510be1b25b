"""The evaluator's micro-batches (``run.eval_micro_batch_size``, ``cgrpo eval``'s
``micro_batch_size``): the models never see more images than one micro-batch, the images
and scores are those of one pass, and nothing is drawn with gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.eval.evaluator import EvalError, EvalPairs, Evaluator, build_evaluator, eval_pairs_of
from cgrpo.run import build
from cgrpo.sampling.sde import sigma_schedule
from tests.conftest import PROMPTS, fast_config, flux_train_config


class Counting:
    """A policy that records the batch of every pass of its models (and whether the pass
    could record gradients); everything else is the wrapped policy's."""

    def __init__(self, policy) -> None:  # noqa: ANN001
        self._policy = policy
        self.seen: dict[str, list[int]] = {"condition": [], "velocity": [], "decode": []}
        self.grad: list[bool] = []

    def encode_condition(self, references, prompts):  # noqa: ANN001, ANN201
        self.seen["condition"].append(len(prompts))
        return self._policy.encode_condition(references, prompts)

    def velocity(self, x, sigma, condition):  # noqa: ANN001, ANN201
        self.seen["velocity"].append(x.shape[0])
        self.grad.append(torch.is_grad_enabled())
        return self._policy.velocity(x, sigma, condition)

    def decode(self, latents):  # noqa: ANN001, ANN201
        self.seen["decode"].append(latents.shape[0])
        return self._policy.decode(latents)

    def __getattr__(self, name: str) -> object:
        return getattr(self._policy, name)


def _draw_both(make_evaluator, policy, micro: int) -> tuple:  # noqa: ANN001
    """(whole-batch result, micro-batched result, the micro-batched policy's counter)."""
    whole, parts = Counting(policy), Counting(policy)
    a = make_evaluator(0).run(whole, keep=range(10_000))
    b = make_evaluator(micro).run(parts, keep=range(10_000))
    return a, b, whole, parts


def _same(a, b) -> None:  # noqa: ANN001
    assert a.kept.keys() == b.kept.keys() and a.kept
    for j in a.kept:
        assert torch.equal(a.kept[j], b.kept[j]), f"item {j} differs"
    for name in a.per_image:
        assert torch.equal(a.per_image[name], b.per_image[name])


def test_embedded_eval_draws_micro_batches_of_the_same_images(
    tmp_path: Path, tiny_weights: Path
) -> None:
    cfg = fast_config(tmp_path, tiny_weights, "data.eval_noises=2", "run.eval_batch_size=7")
    policy, rewards = build.build_policy(cfg), build.build_rewards(cfg)
    pairs = eval_pairs_of(build.build_data(cfg))  # 8 subjects x 1 prompt x 2 noises

    def make(micro: int) -> Evaluator:
        return build_evaluator(cfg, pairs, rewards, micro_batch_size=micro)

    a, b, whole, parts = _draw_both(make, policy, micro=3)
    _same(a, b)
    assert max(whole.seen["velocity"]) == 7  # without: the whole batch at once
    for what, sizes in parts.seen.items():
        # batches of 7, 7, 2 items, each drawn 3 + 3 + 1 / 2 at a time
        assert sizes and max(sizes) <= 3, what
        assert sum(sizes) == 16 * (cfg.sampler.num_steps if what == "velocity" else 1), what
    assert not any(parts.grad) and not any(whole.grad)


def test_run_key_reaches_the_evaluator_and_bad_values_are_refused(
    tmp_path: Path, tiny_weights: Path
) -> None:
    cfg = fast_config(tmp_path, tiny_weights, "run.eval_micro_batch_size=5")
    pairs = EvalPairs.from_lists(torch.rand(2, 3, 8, 8), ["a", "b"], ["s", "t"])
    rewards = build.build_rewards(cfg)
    assert build_evaluator(cfg, pairs, rewards).micro_batch_size == 5
    assert build_evaluator(cfg, pairs, rewards, micro_batch_size=2).micro_batch_size == 2
    with pytest.raises(ValueError, match=r"run\.eval_micro_batch_size must be >= 0"):
        fast_config(tmp_path, tiny_weights, "run.eval_micro_batch_size=-1")
    with pytest.raises(EvalError, match="micro batch size"):
        Evaluator(pairs, rewards, sigma_schedule(2, 1.0), seed=0, micro_batch_size=-2)
    # cgrpo eval's key: the run's unless set
    from cgrpo.eval.config import EvalConfig
    from cgrpo.eval.protocol import evaluator_for

    for key, want in ((0, 5), (4, 4)):
        ev = evaluator_for(EvalConfig(micro_batch_size=key), cfg, pairs, metrics=rewards, shift=1)
        assert ev.micro_batch_size == want
    with pytest.raises(ValueError, match="micro_batch_size must be >= 1"):
        EvalConfig(micro_batch_size=-1)


def test_flux_transformer_never_sees_more_than_a_micro_batch(
    tmp_path: Path, flux_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import FluxTransformer2DModel

    from tests.policies.test_flux_policy import randomise_lora

    cfg = flux_train_config(flux_dir, tmp_path, "run.eval_batch_size=5")
    policy, rewards = build.build_policy(cfg), build.build_rewards(cfg)
    randomise_lora(policy)  # a LoRA that changes the images
    refs = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    pairs = EvalPairs.from_lists(refs, [*PROMPTS, PROMPTS[0]], ["a", "b", "c"])
    seen: list[int] = []
    forward = FluxTransformer2DModel.forward

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(kwargs["hidden_states"].shape[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(FluxTransformer2DModel, "forward", spy)

    whole = make_flux(cfg, pairs, rewards, micro=0).run(policy, keep=range(9))
    assert max(seen) == 5  # batches of 5 and 4 items without micro-batches
    seen.clear()
    parts = Counting(policy)
    b = make_flux(cfg, pairs, rewards, micro=2).run(parts, keep=range(9))
    _same(whole, b)
    assert max(seen) <= 2 and sum(seen) == 9 * cfg.sampler.num_steps
    assert max(parts.seen["decode"]) <= 2 and max(parts.seen["condition"]) <= 2
    assert not any(parts.grad)


def make_flux(cfg, pairs, rewards, *, micro: int) -> Evaluator:  # noqa: ANN001
    return build_evaluator(cfg, pairs, rewards, images_per_pair=3, micro_batch_size=micro)
