"""The vlm_judge reward against a real local HTTP server speaking the chat-completions API
(the ``server`` fixture of ``tests/rewards/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.rewards.vlm_judge import VLMJudgeError, VLMJudgeReward, parse_score
from tests.conftest import fast_config


def _images(n: int) -> torch.Tensor:
    return torch.linspace(0.1, 0.9, n).view(n, 1, 1, 1).expand(n, 3, 8, 8).clone()


def test_scores_images_concurrently_within_the_bound(server) -> None:
    url, judge = server
    judge.delay = 0.05
    r = VLMJudgeReward(url, "stub-vl", max_concurrency=3, timeout=5)
    imgs = _images(9)
    out = r(imgs, ["a dog"] * 9, torch.zeros(9, 3, 8, 8))
    torch.testing.assert_close(out, imgs[:, 0, 0, 0], atol=3e-3, rtol=0)  # 8-bit PNG, 2 decimals
    assert len(judge.requests) == 9 and 1 < judge.max_in_flight <= 3
    content = judge.requests[0]["messages"][0]["content"]
    assert content[0]["type"] == "text" and '"a dog"' in content[0]["text"]
    assert [c["type"] for c in content] == ["text", "image_url"]  # prompt rubric: no reference
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    ident = VLMJudgeReward(url, "stub-vl", rubric="identity")
    ident(imgs[:1], ["a dog"], torch.zeros(1, 3, 8, 8))
    assert [c["type"] for c in judge.requests[-1]["messages"][0]["content"]] == [
        "text", "image_url", "image_url"]  # fmt: skip


def test_retries_slow_replies_500s_and_dropped_connections(server) -> None:
    url, judge = server
    r = VLMJudgeReward(url, "stub-vl", timeout=0.5, retries=2, backoff=0.01)
    judge.plan = ["500", "drop"]  # two failures, then an answer
    assert r(_images(1), ["x"], torch.zeros(1, 3, 8, 8)).item() == pytest.approx(0.1, abs=2e-3)
    judge.plan = ["slow"]  # one timeout, then an answer
    assert r(_images(1), ["x"], torch.zeros(1, 3, 8, 8)).item() == pytest.approx(0.1, abs=2e-3)
    judge.plan = ["slow", "slow", "500"]  # retries exhausted: one clear error
    with pytest.raises(VLMJudgeError, match="after 3 attempts.*HTTP 500"):
        r(_images(1), ["x"], torch.zeros(1, 3, 8, 8))
    patient = VLMJudgeReward(url, "stub-vl", timeout=3, retries=0)
    judge.plan = ["slow"]  # a slow reply within the timeout is simply waited for
    assert patient(_images(1), ["x"], torch.zeros(1, 3, 8, 8)).item() == pytest.approx(
        0.1, abs=2e-3
    )


def test_unparsable_reply_fails_quoting_it(server) -> None:
    url, judge = server
    judge.plan = ["garbage"]
    r = VLMJudgeReward(url, "stub-vl", retries=3, backoff=0.01)
    with pytest.raises(VLMJudgeError, match="I cannot tell"):
        r(_images(1), ["x"], torch.zeros(1, 3, 8, 8))
    assert len(judge.requests) == 1  # a bad reply is not retried
    assert parse_score("Score: 7", 10) == 7 and parse_score("**Score:** 8.5/10", 10) == 8.5
    assert parse_score("6", 10) == 6
    for bad in ("Score: 11", "between 3 and 4", ""):
        with pytest.raises(ValueError):
            parse_score(bad, 10)


def test_unreachable_server_and_wrong_model_fail_at_construction(server) -> None:
    url, _ = server
    with pytest.raises(VLMJudgeError, match="serves \\['stub-vl'\\]"):
        VLMJudgeReward(url, "other-model")
    with pytest.raises(VLMJudgeError, match="no answer from http://127.0.0.1:9/v1/models"):
        VLMJudgeReward("http://127.0.0.1:9/v1", "stub-vl", retries=1, backoff=0.01, timeout=1)


def test_trains_embedded_steps_as_a_third_named_reward(
    server, tmp_path: Path, tiny_weights: Path
) -> None:
    from cgrpo.train.trainer import GRPOTrainer

    url, judge = server
    cfg = fast_config(
        tmp_path, tiny_weights, "run.eval=false",
        f"rewards.judge={{kind: vlm_judge, weight: 0.5, base_url: '{url}', model: stub-vl}}",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    assert trainer.rewards.names == ["identity", "prompt", "judge"]
    trainer.train(quiet=True)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert "reward/judge/mean" in head and len(rows) == 3
    assert len(judge.requests) == 2 * 2 * 4  # steps x pairs x G
    vals = [float(r.split(",")[head.index("reward/judge/mean")]) for r in rows[1:]]
    assert all(0 < v < 1 for v in vals)
