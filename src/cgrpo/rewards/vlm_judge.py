"""A vision-language model as the judge: a reward from any OpenAI-compatible server.

Users serve judges (Qwen2.5-VL, InternVL, GPT-4o behind a proxy, ...) with vLLM or SGLang
behind the OpenAI chat-completions API; ``vlm_judge`` speaks that API and nothing else::

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000 --limit-mm-per-prompt image=2

    rewards:
      judge: {kind: vlm_judge, weight: 0.5, base_url: "http://127.0.0.1:8000/v1",
              model: Qwen/Qwen2.5-VL-7B-Instruct, rubric: prompt}

Each image is sent as a base64 PNG data URL in one chat-completions request (with the
reference image first for the ``identity`` rubric), ``max_concurrency`` requests at a
time. The judge answers with a score on ``0 .. scale``; the reward is ``score / scale``
in [0, 1]. Requests time out after ``timeout`` seconds and are retried ``retries`` times
with exponential backoff (``backoff`` x 2^k seconds) on connection errors, timeouts,
HTTP 429 and 5xx; other HTTP errors, and a reply without a readable score, fail at once
with one message quoting the reply. The API key is read from the environment variable
``api_key_env`` (none needed for a local vLLM). At construction the server's
``/models`` is asked once (``check``), so a wrong URL fails before any compute.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from cgrpo.io.images import to_uint8

__all__ = ["RUBRICS", "VLMJudgeError", "VLMJudgeReward", "parse_score"]

#: The shipped rubrics: ``{prompt}`` is replaced by the image's prompt; ``{scale}`` by the
#: top of the scale.
RUBRICS: dict[str, str] = {
    "prompt": (
        "You grade how well an AI-generated image follows its text prompt.\n"
        'Prompt: "{prompt}"\n'
        "Check every object, attribute (colour, size, count), background and relation the "
        "prompt asks for. Give 0 if the image ignores the prompt and {scale} if every "
        "element is depicted correctly; ignore image quality unless it hides an element.\n"
        "Answer with one line: Score: <number from 0 to {scale}>"
    ),
    "identity": (
        "The first image is a reference photo of a subject. The second image was generated "
        'for the prompt "{prompt}" and should show the same subject.\n'
        "Grade how clearly the second image shows that very subject: its shape, colours, "
        "markings and distinctive details. Ignore the background, pose, lighting and any "
        "change the prompt asks for. Give 0 for a different subject and {scale} for the "
        "same one with every detail kept.\n"
        "Answer with one line: Score: <number from 0 to {scale}>"
    ),
}

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class VLMJudgeError(RuntimeError):
    """The judge cannot be reached, refuses, or replies without a score."""


def parse_score(reply: str, scale: float) -> float:
    """The score in a judge's reply: the number after ``Score:``, else the only number;
    ``ValueError`` (quoting the reply) when there is none, several, or it is off the scale."""
    m = _SCORE.search(reply)
    if m is None:
        numbers = _NUMBER.findall(reply)
        if len(numbers) != 1:
            raise ValueError(
                f"no score in the judge's reply {reply!r}: expected 'Score: <0-{scale:g}>'"
            )
        value = float(numbers[0])
    else:
        value = float(m.group(1))
    if not 0 <= value <= scale:
        raise ValueError(f"score {value:g} outside 0..{scale:g} in the judge's reply {reply!r}")
    return value


def _data_url(image: torch.Tensor) -> str:
    """(3, H, W) in [0, 1] -> ``data:image/png;base64,...`` (8-bit, as saved images)."""
    from PIL import Image

    arr = to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).cpu().numpy())).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class VLMJudgeReward:
    """Score each image with a VLM behind an OpenAI-compatible chat-completions server."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
        rubric: str = "prompt",
        *,
        template: str | None = None,
        send_reference: bool | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        scale: float = 10.0,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 16,
        temperature: float = 0.0,
        check: bool = True,
    ) -> None:
        """``rubric``: a shipped rubric (:data:`RUBRICS`: ``prompt``, ``identity``);
        ``template``: your own instead (``{prompt}`` and ``{scale}`` are filled in);
        ``send_reference``: send the reference before the image (default: with the
        ``identity`` rubric)."""
        if template is None and rubric not in RUBRICS:
            raise ValueError(
                f"vlm_judge: unknown rubric {rubric!r}; shipped: {sorted(RUBRICS)} "
                "(or give your own as template)"
            )
        if max_concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0 or scale <= 0:
            raise ValueError(
                "vlm_judge: need max_concurrency >= 1, retries >= 0, timeout > 0, "
                "backoff >= 0, scale > 0"
            )
        self.url = base_url.rstrip("/")
        self.model = model
        self.template = template if template is not None else RUBRICS[rubric]
        self.send_reference = rubric == "identity" if send_reference is None else send_reference
        self.api_key = os.environ.get(api_key_env, "")
        self.scale = float(scale)
        self.max_concurrency = max_concurrency
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_tokens, self.temperature = max_tokens, temperature
        self.name = f"vlm_judge_{rubric if template is None else 'custom'}"
        self.uses_references = self.send_reference
        if check:
            self._check_server()

    # -- transport -------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One HTTP exchange with retries; the parsed JSON reply."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url + path, data, headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")[:300]
                if exc.code not in _RETRY_STATUS:
                    raise VLMJudgeError(
                        f"vlm_judge: {self.url}{path} answered HTTP {exc.code}: {text!r}; "
                        "check rewards.<name>.model and the API key variable (api_key_env)"
                    ) from None
                last = f"HTTP {exc.code}: {text!r}"
            except json.JSONDecodeError as exc:
                raise VLMJudgeError(
                    f"vlm_judge: {self.url}{path} sent a reply that is not JSON ({exc}): is "
                    "base_url the server's OpenAI-compatible /v1 root?"
                ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        raise VLMJudgeError(
            f"vlm_judge: no answer from {self.url}{path} after {self.retries + 1} attempts "
            f"(last: {last}); start the server (e.g. `vllm serve {self.model}`) or fix "
            "rewards.<name>.base_url / timeout"
        )

    def _check_server(self) -> None:
        models = self._request("GET", "/models", None)
        names = [m.get("id") for m in models.get("data", []) if isinstance(m, dict)]
        if names and self.model not in names:
            raise VLMJudgeError(
                f"vlm_judge: {self.url} serves {names}, not {self.model!r}: set "
                "rewards.<name>.model to one of them"
            )

    # -- scoring -----------------------------------------------------------------------------

    def messages(self, image: torch.Tensor, prompt: str, reference: torch.Tensor) -> list[dict]:
        """The chat-completions ``messages`` for one image."""
        text = self.template.replace("{prompt}", prompt).replace("{scale}", f"{self.scale:g}")
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        images = [reference, image] if self.send_reference else [image]
        content += [{"type": "image_url", "image_url": {"url": _data_url(im)}} for im in images]
        return [{"role": "user", "content": content}]

    def score_one(self, image: torch.Tensor, prompt: str, reference: torch.Tensor) -> float:
        body = {
            "model": self.model,
            "messages": self.messages(image, prompt, reference),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        reply = self._request("POST", "/chat/completions", body)
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise VLMJudgeError(
                f"vlm_judge: {self.url} replied without choices[0].message.content: "
                f"{json.dumps(reply)[:300]!r}"
            ) from None
        try:
            return parse_score(str(text), self.scale) / self.scale
        except ValueError as exc:
            raise VLMJudgeError(
                f"vlm_judge ({self.model}): {exc}; make the rubric (template) ask for "
                "'Score: <number>' or raise max_tokens"
            ) from None

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        if not (len(images) == len(prompts) == len(references)):
            raise ValueError(
                f"vlm_judge: {len(images)} images, {len(prompts)} prompts and "
                f"{len(references)} references: give one of each per image"
            )
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            scores = list(pool.map(self.score_one, images, prompts, references))
        return torch.tensor(scores, dtype=torch.float32, device=images.device)
