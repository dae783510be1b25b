"""The released code's VLM judge (Customized-GRPO ``train/train_grpo_vlm.py``), as a rubric of
``vlm_judge``, against the stub chat-completions server of ``tests/rewards/conftest.py``."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cgrpo.rewards.vlm_judge import RUBRICS, VLMJudgeError, VLMJudgeReward, parse_score

# sha256 of the release's process_prompt("a dog", task) (uno/reward/process_prompt.py at
# commit a431775f of Safeoffellow/Customized-GRPO), computed from the release's file:
#   python -c "from process_prompt import process_prompt as p; import hashlib;
#              print(hashlib.sha256(p('a dog', 'concept').encode()).hexdigest())"
RELEASE_SHA256 = {
    "concept": "631755e2b93c190da72860a048ddef4e839821f4744858e908bf827f3fbe7a48",
    "concept_cot": "2832ea1304c773502c6322162049bee8b38ca74cd45e0a5ba15ecbc97ac07d88",
    "text": "33a10c99c3b0a929b5e3999b486576f9488d58dd64c6ce64d822f014c8dc8312",
    "text_cot": "bb1a50cf7e32473a9ef476884344d1ac868d23c2e82cde9863c33afcc7d74a0d",
}


def _decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _pictures(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 12, 10, generator=g), torch.rand(1, 3, 16, 16, generator=g)


@pytest.mark.parametrize("task", sorted(RELEASE_SHA256))
def test_release_rubrics_are_the_released_text_to_the_byte(task: str) -> None:
    rubric = RUBRICS[f"release_{task}"]
    text = rubric.text.replace("{prompt}", "a dog")
    assert hashlib.sha256(text.encode()).hexdigest() == RELEASE_SHA256[task]
    assert rubric.scale == 4 and rubric.send_reference == task.startswith("concept")
    assert rubric.system == "You are an image analysis assistant."
    assert rubric.max_tokens is None and rubric.temperature is None


def test_release_concept_sends_the_reference_and_reads_0_to_4(server) -> None:
    url, judge = server
    judge.answer = lambda body: "Score: 3"
    r = VLMJudgeReward(url, "stub-vl", rubric="release_concept")
    image, reference = _pictures(0)
    out = r(image, ["a dog on the beach"], reference)
    assert out.tolist() == [0.75]  # 3 on the 0-4 scale
    body = judge.requests[-1]
    assert "max_tokens" not in body and "temperature" not in body  # as released: not sent
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are an image analysis assistant."}
    kinds = [c["type"] for c in user["content"]]
    assert kinds == ["text", "image_url", "image_url"]
    text = user["content"][0]["text"]
    assert "ranging from 0 to 4:" in text and "- Excellent (4): Near-identical." in text
    assert "the first image is a reference image, and the second image is the generated" in text
    first, second = (_decode(c["image_url"]["url"]) for c in user["content"][1:])
    want_ref = (reference[0].permute(1, 2, 0).numpy() * 255).round()
    want_img = (image[0].permute(1, 2, 0).numpy() * 255).round()
    assert first.shape == (16, 16, 3) and np.abs(first - want_ref).max() <= 1
    assert second.shape == (12, 10, 3) and np.abs(second - want_img).max() <= 1


def test_release_text_cot_fills_the_prompt_and_reads_the_first_capital_score(server) -> None:
    url, judge = server
    judge.answer = lambda body: "Analysis: colours right; a score: 1 for context.\nScore: 4"
    r = VLMJudgeReward(url, "stub-vl", rubric="release_text_cot")
    image, reference = _pictures(1)
    assert r(image, ["a dog on the beach"], reference).tolist() == [1.0]
    user = judge.requests[-1]["messages"][-1]
    assert [c["type"] for c in user["content"]] == ["text", "image_url"]  # no reference
    assert "Text Prompt: a dog on the beach\n" in user["content"][0]["text"]
    assert not r.uses_references
    # our own parser would have read the lower-case "score: 1" first
    assert parse_score("a score: 1.\nScore: 4", 4) == 1
    assert parse_score("a score: 1.\nScore: 4", 4, pattern=RUBRICS["release_text"].pattern) == 4


@pytest.mark.parametrize("reply", ["I cannot tell.", "Score: 7", "Score: .", ""])
def test_unscorable_reply_raises_by_default_and_scores_0_when_asked(server, reply: str) -> None:
    url, judge = server
    judge.answer = lambda body: reply
    image, reference = _pictures(2)
    strict = VLMJudgeReward(url, "stub-vl", rubric="release_concept", retries=0)
    with pytest.raises(VLMJudgeError) as err:
        strict(image, ["x"], reference)
    message = str(err.value)
    assert "\n" not in message and message.startswith("vlm_judge_release_concept (stub-vl):")
    assert "on_unscorable: zero" in message
    lenient = VLMJudgeReward(url, "stub-vl", rubric="release_concept", on_unscorable="zero")
    judge.answer = lambda body: reply if "x" in body["messages"][-1]["content"][0]["text"] else ""
    two = lenient(torch.cat([image, image]), ["x", "y"], torch.cat([reference, reference]))
    assert two.tolist() == [0.0, 0.0] and lenient.unscorable == 2
    judge.answer = lambda body: "Score: 2"
    assert lenient(image, ["x"], reference).tolist() == [0.5] and lenient.unscorable == 2


def release_reward(reply: str) -> float:
    """train/train_grpo_vlm.py: ``s = re.search(r'Score:\\s*([0-9\\.]+)', answer)``, then
    ``float(s.group(1))`` if it matched else ``float(0)`` (raw 0-4, not normalised)."""
    s = re.search(r"Score:\s*([0-9\.]+)", reply)
    return float(s.group(1)) if s else 0.0


REPLIES = [
    "Score: 3",
    "Score:4",
    "Analysis: shape and colour kept, texture soft.\nScore: 2.5",
    "Score: 1, on reflection Score: 3",  # the first match counts
    "score: 3",  # lower case: no match, 0
    "**Score:** 3",  # markdown between: no match, 0
    "I cannot tell.",
    "None",  # what the release's vlm_api returns when its tries fail
]


@pytest.mark.parametrize("reply", REPLIES)
def test_zero_rule_equals_the_release_formula_over_4(server, reply: str) -> None:
    url, judge = server
    judge.answer = lambda body: reply
    r = VLMJudgeReward(url, "stub-vl", rubric="release_concept", on_unscorable="zero")
    image, reference = _pictures(5)
    assert r(image, ["x"], reference).item() == pytest.approx(release_reward(reply) / 4)


def test_zero_rule_does_not_hide_a_dead_judge(server) -> None:
    url, judge = server
    r = VLMJudgeReward(url, "stub-vl", rubric="release_concept", on_unscorable="zero", retries=0)
    judge.plan = ["500"]
    image, reference = _pictures(6)
    with pytest.raises(VLMJudgeError, match="no answer from .* after 1 attempts"):
        r(image, ["x"], reference)
    assert r.unscorable == 0


def test_a_prompt_is_sent_as_written(server) -> None:
    url, judge = server
    r = VLMJudgeReward(url, "stub-vl", rubric="prompt")
    image, reference = _pictures(7)
    r(image, ["a sign reading {scale} and {prompt}"], reference)
    text = judge.requests[-1]["messages"][-1]["content"][0]["text"]
    assert 'Prompt: "a sign reading {scale} and {prompt}"' in text
    assert "Score: <number from 0 to 10>" in text


def test_our_rubrics_keep_their_defaults_and_bad_options_fail(server) -> None:
    url, judge = server
    r = VLMJudgeReward(url, "stub-vl", rubric="identity")
    image, reference = _pictures(3)
    r(image, ["x"], reference)
    body = judge.requests[-1]
    assert body["max_tokens"] == 16 and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["user"] and r.scale == 10
    with pytest.raises(ValueError, match="on_unscorable must be 'raise' or 'zero', got 'skip'"):
        VLMJudgeReward(url, "stub-vl", on_unscorable="skip")
    with pytest.raises(ValueError, match="unknown rubric 'release'"):
        VLMJudgeReward(url, "stub-vl", rubric="release")


def test_segmented_reference_is_painted_white_once_per_reference(server) -> None:
    url, judge = server
    judge.answer = lambda body: "Score: 4"
    calls: list[int] = []

    def oracle(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        m = torch.zeros(x.shape[0], 16, 16)
        m[:, 4:12, 5:11] = 1.0
        return m

    r = VLMJudgeReward(url, "stub-vl", rubric="release_concept", segmenter=oracle)
    image, reference = _pictures(4)
    group = 3  # three samples of one reference
    r(image.expand(group, -1, -1, -1), ["x"] * group, reference.expand(group, -1, -1, -1))
    r(image, ["x"], reference.clone())
    assert calls == [1]  # one unique reference, segmented once across calls
    sent = _decode(judge.requests[-1]["messages"][-1]["content"][1]["image_url"]["url"])
    assert (sent[:4] == 255).all() and (sent[:, :5] == 255).all()  # outside: white
    inside = (reference[0, :, 4:12, 5:11].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(sent[4:12, 5:11] - inside).max() <= 1  # the subject as it was
