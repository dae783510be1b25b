"""sampler.overlap_rewards: scoring while sampling gives the rollout and scores of scoring
after it, and really runs while the rollout continues."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from cgrpo.data.base import EmbeddedData
from cgrpo.policies.embedded import EmbeddedPolicy
from cgrpo.rewards.base import make_reward
from cgrpo.rewards.set import RewardSet
from cgrpo.rewards.vlm_judge import VLMJudgeReward
from cgrpo.sampling.rollout import sample_groups
from cgrpo.sampling.sde import sigma_schedule
from cgrpo.train.scoring_overlap import OverlappedScoring
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config


@pytest.mark.parametrize("same_noise", [True, False])
@pytest.mark.parametrize("reward_image", ["clean", "sample"])
def test_chunked_rollout_is_the_same_rollout(
    tiny_weights: Path, same_noise: bool, reward_image: str
) -> None:
    policy = EmbeddedPolicy(weights=tiny_weights)
    torch.manual_seed(1)
    torch.nn.init.normal_(policy.model.head[-1].weight, std=0.05)
    refs, prompts = EmbeddedData().sample(3, random.Random(0))
    cond = policy.encode_condition(refs, prompts)
    mask = [False, True, True, False]  # an ODE prefix (shared by a group), an ODE tail

    def roll(on_chunk=None):
        gen = torch.Generator().manual_seed(5)
        return sample_groups(
            policy, cond, 4, sigmas=sigma_schedule(4), eta=0.5, same_noise=same_noise,
            generator=gen, micro_batch_size=5, sde_mask=mask, reward_image=reward_image,
            on_chunk=on_chunk,
        )  # fmt: skip

    chunks: list[tuple[slice, torch.Tensor]] = []
    plain, chunked = roll(), roll(lambda rows, x: chunks.append((rows, x.clone())))
    assert [(c.start, c.stop) for c, _ in chunks] == [(0, 5), (5, 10), (10, 12)]
    assert torch.equal(plain.latents, chunked.latents)
    torch.testing.assert_close(plain.log_probs, chunked.log_probs, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(plain.rewarded, chunked.rewarded)
    assert torch.equal(torch.cat([x for _, x in chunks]), plain.rewarded)


def _trainer(tmp_path: Path, weights: Path, *args: str) -> GRPOTrainer:
    cfg = fast_config(tmp_path, weights, "run.eval=false", "grpo.micro_batch_size=3", *args)
    return GRPOTrainer(cfg)


def test_overlapped_steps_equal_plain_steps(tmp_path: Path, tiny_weights: Path) -> None:
    plain = _trainer(tmp_path / "a", tiny_weights)
    overlapped = _trainer(tmp_path / "b", tiny_weights, "sampler.overlap_rewards=true")
    for step in range(2):
        a, b = plain.train_step(), overlapped.train_step()
        plain.state.step += 1
        overlapped.state.step += 1
        assert a.skipped == b.skipped
        for k, v in a.metrics.items():  # equal up to the rewards' batch-size rounding
            if not k.startswith("sec_"):
                assert b.metrics[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
        if step == 0:  # the same rollout: the same images
            assert torch.equal(a.images, b.images)
    for p, q in zip(plain.params, overlapped.params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_overlapped_scores_are_the_chunks_scored_after_the_rollout(
    tmp_path: Path, tiny_weights: Path
) -> None:
    trainer = _trainer(tmp_path, tiny_weights, "sampler.overlap_rewards=true")
    roll, refs, prompts = trainer.rollout()
    images, scores = trainer._score(roll, refs, prompts)
    assert torch.equal(images, trainer.policy.decode(roll.rewarded))
    chunks = [slice(0, 3), slice(3, 6), slice(6, 8)]  # grpo.micro_batch_size=3 of 2 x 4
    after = [trainer.rewards.score(images[r], prompts[r], refs[r]) for r in chunks]
    whole = trainer.rewards.score(images, prompts, refs)
    assert list(scores) == ["identity", "prompt"]
    for name, got in scores.items():
        assert torch.equal(got, torch.cat([a[name] for a in after])), name
        torch.testing.assert_close(got, whole[name], rtol=1e-5, atol=1e-6)


class _WaitsForSampling:
    """A reward whose first call waits until the policy is called again: it can only
    return when the scoring runs while the rollout goes on."""

    name = "waits"

    def __init__(self, sampled: threading.Event) -> None:
        self.sampled, self.overlapped, self.threads = sampled, None, set()
        self.inner = make_reward("embedded_identity")

    def __call__(self, images, prompts, references):
        self.threads.add(threading.current_thread().name)
        if self.overlapped is None:
            self.sampled.clear()
            self.overlapped = self.sampled.wait(timeout=20)
        return self.inner(images, prompts, references)


def test_scoring_runs_while_the_rollout_goes_on(tmp_path: Path, tiny_weights: Path) -> None:
    sampled = threading.Event()
    reward = _WaitsForSampling(sampled)
    cfg = fast_config(tmp_path, tiny_weights, "run.eval=false", "grpo.micro_batch_size=2",
                      "sampler.overlap_rewards=true")  # fmt: skip
    models = {"identity": reward, "prompt": make_reward("embedded_prompt")}
    trainer = GRPOTrainer(cfg, rewards=RewardSet(models, {"identity": 1.0, "prompt": 1.0}))
    velocity = trainer.policy.velocity

    def noted(*a, **k):
        sampled.set()
        return velocity(*a, **k)

    trainer.policy.velocity = noted
    trainer.train_step()
    assert reward.overlapped is True
    assert threading.current_thread().name not in reward.threads


def test_a_failing_reward_fails_the_overlapped_step(tmp_path: Path, tiny_weights: Path) -> None:
    class Broken:
        name = "broken"

        def __call__(self, images, prompts, references):
            raise ValueError("broken reward: fix its options")

    cfg = fast_config(tmp_path, tiny_weights, "run.eval=false", "grpo.micro_batch_size=2",
                      "sampler.overlap_rewards=true")  # fmt: skip
    trainer = GRPOTrainer(cfg, rewards=RewardSet({"b": Broken()}, {"b": 1.0}))
    with pytest.raises(ValueError, match="broken reward"):
        trainer.train_step()


class _JudgeAfterAWhile:
    """A judge whose request starts only after ``go``: the stop comes while the worker
    still prepares the chunk (as vlm_judge paints references), before any request.
    ``fail_first``: the first chunk raises instead."""

    name = "late_judge"

    def __init__(self, url: str, fail_first: bool = False) -> None:
        self.started, self.go = threading.Event(), threading.Event()
        self.judge = VLMJudgeReward(url, "m", check=False, retries=0, timeout=30.0)
        self.fail_first, self.calls = fail_first, 0

    def __call__(self, images, prompts, references):
        self.calls += 1
        if self.fail_first and self.calls == 1:
            raise ValueError("broken chunk")
        self.started.set()
        self.go.wait(10)
        return self.judge(images, prompts, references)


def _hangs(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(40)


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A judge server that never answers a chat (40 s; the judge's timeout is 30 s)."""
    handler = type("Hangs", (BaseHTTPRequestHandler,), {
        "do_POST": _hangs, "log_message": lambda *a: None,
    })  # fmt: skip
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _no_reward_thread_left(within: float = 5.0) -> None:
    """The worker ended: Python waits for it at exit, so a run would hang on it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and _reward_threads():
        time.sleep(0.02)
    assert not _reward_threads()


def _reward_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("cgrpo-rewards")]


def test_an_abandoned_chunk_starts_no_request_that_outlives_the_stop(hanging_url: str) -> None:
    reward = _JudgeAfterAWhile(hanging_url)
    rewards = RewardSet({"judge": reward}, {"judge": 1.0})
    image = torch.full((1, 3, 8, 8), 0.5)
    scoring = OverlappedScoring(lambda x: x, rewards, references=image, prompts=["a dog"])
    scoring(slice(0, 1), image)
    assert reward.started.wait(10)
    scoring.close(abandon=True)  # a stop signal: the chunk in flight is abandoned
    reward.go.set()  # only now does it make its request: it must be cancelled too
    _no_reward_thread_left()


def test_a_chunks_error_abandons_the_chunk_waiting_on_a_server(hanging_url: str) -> None:
    reward = _JudgeAfterAWhile(hanging_url, fail_first=True)
    reward.go.set()
    rewards = RewardSet({"judge": reward}, {"judge": 1.0})
    images = torch.full((2, 3, 8, 8), 0.5)
    scoring = OverlappedScoring(lambda x: x, rewards, references=images, prompts=["a", "b"])
    scoring(slice(0, 1), images[:1])
    scoring(slice(1, 2), images[1:])
    assert reward.started.wait(10)  # the second chunk's request hangs
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="broken chunk"):
        scoring.result()
    assert time.monotonic() - t0 < 5.0  # not the judge's 30 s timeout
    _no_reward_thread_left()


def test_a_failed_rollout_drops_the_chunks_it_handed_over(
    tmp_path: Path, tiny_weights: Path, hanging_url: str
) -> None:
    reward = _JudgeAfterAWhile(hanging_url)
    reward.go.set()
    cfg = fast_config(tmp_path, tiny_weights, "run.eval=false", "grpo.micro_batch_size=2",
                      "sampler.overlap_rewards=true")  # fmt: skip
    trainer = GRPOTrainer(cfg, rewards=RewardSet({"judge": reward}, {"judge": 1.0}))
    velocity = trainer.policy.velocity

    def fails_once_a_chunk_is_scored(*a, **k):
        if reward.started.is_set():
            raise RuntimeError("out of memory in the second chunk")
        return velocity(*a, **k)

    trainer.policy.velocity = fails_once_a_chunk_is_scored
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.train_step()
    assert trainer._scoring is None
    _no_reward_thread_left()
