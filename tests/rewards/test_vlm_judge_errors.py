"""vlm_judge's misconfigurations are one line naming the key: a base_url that is not a URL,
a server whose /models is not an OpenAI model list; its errors are ValueErrors, which the
CLI prints without a traceback."""

from __future__ import annotations

import pytest

from cgrpo.rewards import make_reward
from cgrpo.rewards.vlm_judge import VLMJudgeError


@pytest.mark.parametrize("url", ["not a url", "127.0.0.1:8000/v1", "ftp://host/v1", ""])
def test_base_url_that_is_not_an_http_url_names_the_key(url: str) -> None:
    with pytest.raises(ValueError, match=r"rewards\.<name>\.base_url must be an http\(s\) URL"):
        make_reward("vlm_judge", base_url=url, model="stub-vl")


@pytest.mark.parametrize("reply", [[], [{"id": "stub-vl"}], {"object": "list"}, "models"])
def test_a_models_reply_that_is_not_a_model_list_is_one_line(server, reply: object) -> None:
    url, judge = server
    judge.models = reply
    with pytest.raises(VLMJudgeError) as err:
        make_reward("vlm_judge", base_url=url, model="stub-vl", retries=0)
    text = str(err.value)
    assert "\n" not in text and "/models did not answer an OpenAI model list" in text
    assert isinstance(err.value, ValueError)
