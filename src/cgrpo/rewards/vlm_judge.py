"""A vision-language model as the judge: a reward from any OpenAI-compatible server.

Users serve judges (Qwen2.5-VL, InternVL, GPT-4o behind a proxy, ...) with vLLM or SGLang
behind the OpenAI chat-completions API; ``vlm_judge`` speaks that API and nothing else::

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000 --limit-mm-per-prompt image=2

    rewards:
      judge: {kind: vlm_judge, weight: 0.5, base_url: "http://127.0.0.1:8000/v1",
              model: Qwen/Qwen2.5-VL-7B-Instruct, rubric: prompt}

Each image is sent as a base64 PNG data URL in one chat-completions request (with the
reference image first when the rubric compares with it), ``max_concurrency`` requests at a
time. The rubric (:mod:`cgrpo.rewards.vlm_templates`: ours, 0-10, or the paper's released
ones, 0-4) fixes the text, the scale, the system message and how the score is read; the
reward is ``score / scale`` in [0, 1]. A request (connecting, sending and reading the whole
reply) is given up on after ``timeout`` seconds and retried ``retries`` times with
exponential backoff (``backoff`` x 2^k seconds) on connection errors, timeouts, HTTP 429
and 5xx; other HTTP errors, a reply that is not JSON and one over 8 MiB
(:data:`~cgrpo.rewards.http_json.MAX_REPLY_BYTES`) fail at once. A stop signal whose
handler calls :func:`cgrpo.io.interrupts.stop_now` (preemption) abandons the requests in
flight at once (:class:`~cgrpo.io.interrupts.StopRequested`). A reply
without a readable score (none, or one off ``0..scale``) fails with one message quoting it
(``on_unscorable: raise``, the default) or scores 0 (``zero``: the released code's rule,
``float(m.group(1)) if m else 0``). Transport failures raise in both modes (the release
also scores 0 when its three tries fail; a dead judge here stops the run instead of
zeroing every reward). The API key is read from the environment variable ``api_key_env``
(none needed for a local vLLM). At construction the server's ``/models`` is asked once
(``check``), so a wrong URL fails before any compute.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from cgrpo.config.errors import quoted, shorten
from cgrpo.io.errors import ServiceError
from cgrpo.io.images import to_uint8
from cgrpo.io.interrupts import interruptible
from cgrpo.rewards.http_json import (
    MAX_REPLY_BYTES,
    Cancel,
    TransportError,
    is_http_url,
    request_json,
)
from cgrpo.rewards.images import EmbeddingCache, image_key
from cgrpo.rewards.segment import make_segmenter, paint_outside
from cgrpo.rewards.vlm_templates import RUBRICS, JudgeTemplate

__all__ = ["RUBRICS", "VLMJudgeError", "VLMJudgeReward", "parse_score"]

log = logging.getLogger(__name__)

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class VLMJudgeError(ServiceError, ValueError):
    """The judge cannot be reached, refuses, or replies without a score. Also a
    ``ValueError``: the CLI prints it as one line, not a traceback."""


def parse_score(reply: str, scale: float, *, pattern: str | None = None) -> float:
    """The score in a judge's reply: the number after ``Score:``, else the only number;
    with ``pattern``, group 1 of its first match (no fallback). ``ValueError`` (quoting
    the reply) when there is none, several, it is not a number, or it is off ``0..scale``."""
    if pattern is not None:
        m = re.search(pattern, reply)
        try:
            value = float(m.group(1)) if m else None
        except ValueError:
            value = None
        if value is None:
            raise ValueError(f"no score matching {pattern!r} in the judge's reply {quoted(reply)}")
        return _in_range(value, scale, reply)
    m = _SCORE.search(reply)
    if m is None:
        numbers = _NUMBER.findall(reply)
        if len(numbers) != 1:
            raise ValueError(
                f"no score in the judge's reply {quoted(reply)}: expected 'Score: <0-{scale:g}>'"
            )
        value = float(numbers[0])
    else:
        value = float(m.group(1))
    return _in_range(value, scale, reply)


def _in_range(value: float, scale: float, reply: str) -> float:
    if not 0 <= value <= scale:
        raise ValueError(
            f"score {value:g} outside 0..{scale:g} in the judge's reply {quoted(reply)}"
        )
    return value


def _data_url(image: torch.Tensor) -> str:
    """(3, H, W) in [0, 1] -> ``data:image/png;base64,...`` (8-bit, as saved images)."""
    from PIL import Image

    arr = to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).cpu().numpy())).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class VLMJudgeReward:
    """Score each image with a VLM behind an OpenAI-compatible chat-completions server.

    ``rubric``: a shipped rubric (:data:`RUBRICS`: ours ``prompt``, ``identity``; the
    release's ``release_concept``, ``release_concept_cot``, ``release_text``,
    ``release_text_cot``). ``template``: your own text in its place (``{prompt}`` and
    ``{scale}`` filled in; the rubric's other settings kept). ``send_reference``,
    ``scale``, ``max_tokens``, ``temperature``: ``None`` takes the rubric's.
    ``on_unscorable``: ``"raise"`` (a reply without a readable score fails) or ``"zero"``
    (it scores 0, as the released code counts it; counted in ``unscorable``).
    ``segmenter`` (+ ``segmenter_options``, ``seg_threshold``): paint the reference white
    outside its subject before sending it (the release sends its ``_seg.png`` reference);
    each unique reference is segmented once (``cache_size`` kept).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
        rubric: str = "prompt",
        *,
        template: str | None = None,
        send_reference: bool | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        scale: float | None = None,
        on_unscorable: str = "raise",
        segmenter: object = None,
        segmenter_options: dict[str, Any] | None = None,
        seg_threshold: float = 0.5,
        cache_size: int = 64,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int | None = None,
        temperature: float | None = None,
        check: bool = True,
    ) -> None:
        if rubric not in RUBRICS:
            raise ValueError(
                f"vlm_judge: unknown rubric {rubric!r}; shipped: {sorted(RUBRICS)} "
                "(or give your own text as template)"
            )
        if on_unscorable not in ("raise", "zero"):
            raise ValueError(
                f"vlm_judge: on_unscorable must be 'raise' or 'zero', got {on_unscorable!r}"
            )
        base = RUBRICS[rubric]
        self.rubric = JudgeTemplate(
            base.text if template is None else template,
            scale=float(base.scale if scale is None else scale),
            send_reference=base.send_reference if send_reference is None else send_reference,
            system=base.system,
            pattern=base.pattern,
            max_tokens=base.max_tokens if max_tokens is None else max_tokens,
            temperature=base.temperature if temperature is None else temperature,
        )
        if max_concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "vlm_judge: need max_concurrency >= 1, retries >= 0, timeout > 0, backoff >= 0"
            )
        if self.rubric.scale <= 0:
            raise ValueError(f"vlm_judge: scale must be > 0, got {self.rubric.scale:g}")
        if not is_http_url(base_url):
            raise ValueError(
                f"vlm_judge: rewards.<name>.base_url must be an http(s) URL of the server's "
                f"OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1; got {base_url!r}"
            )
        self.url = base_url.rstrip("/")
        self.model = model
        self.template = self.rubric.text
        self.send_reference = self.rubric.send_reference
        self.scale = self.rubric.scale
        self.on_unscorable = on_unscorable
        self.unscorable = 0
        self._count_lock = threading.Lock()
        self.segmenter = make_segmenter(segmenter, **(segmenter_options or {}))
        self.seg_threshold = seg_threshold
        self.painted = EmbeddingCache(cache_size)
        self.api_key = os.environ.get(api_key_env, "")
        self.max_concurrency = max_concurrency
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.name = f"vlm_judge_{rubric if template is None else 'custom'}"
        self.uses_references = self.send_reference
        if check:
            self._check_server()

    # -- transport -------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, *, cancel: Cancel | None = None
    ) -> Any:
        """One HTTP exchange with retries (:func:`~cgrpo.rewards.http_json.request_json`);
        the parsed JSON reply, else one :class:`VLMJudgeError` line."""
        where = f"{self.url}{path}"
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return request_json(
                where, body, method=method, headers=auth, timeout=self.timeout,
                retries=self.retries, backoff=self.backoff, retry_status=_RETRY_STATUS,
                cancel=cancel,
            )  # fmt: skip
        except TransportError as exc:
            raise VLMJudgeError(self._transport_message(where, exc)) from None

    def _transport_message(self, where: str, exc: TransportError) -> str:
        """The one line of a request to ``where`` that got no usable reply."""
        if exc.kind == "refused":
            text = exc.body.decode("utf-8", "replace")[:300]
            return (
                f"vlm_judge: {where} answered HTTP {exc.status}: {text!r}; check "
                "rewards.<name>.model and the API key variable (api_key_env)"
            )
        if exc.kind == "not_json":
            return (
                f"vlm_judge: {where} sent a reply that is not JSON ({exc.last}): is "
                "rewards.<name>.base_url the server's OpenAI-compatible /v1 root?"
            )
        if exc.kind == "too_big":
            return (
                f"vlm_judge: {where} sent a reply of {exc.last}, over the {MAX_REPLY_BYTES} "
                "bytes read: is rewards.<name>.base_url the server's OpenAI-compatible /v1 "
                "root, and rewards.<name>.max_tokens small?"
            )
        if exc.kind == "cancelled":
            return f"vlm_judge: the request to {where} was abandoned (the run is stopping)"
        if exc.timed_out:
            return (
                f"vlm_judge: no complete reply from {where} within rewards.<name>.timeout="
                f"{self.timeout:g} s, {exc.attempts} attempts; raise rewards.<name>.timeout "
                "if the server is only slow, else check the server"
            )
        return (
            f"vlm_judge: no answer from {where} after {exc.attempts} attempts (last: "
            f"{exc.last}); start the server (e.g. `vllm serve {shorten(self.model)}`) or fix "
            f"rewards.<name>.base_url / timeout (now {self.timeout:g} s)"
        )

    def _check_server(self) -> None:
        models = self._request("GET", "/models", None)
        listed = models.get("data") if isinstance(models, dict) else None
        if not isinstance(listed, list):
            raise VLMJudgeError(
                f"vlm_judge: {self.url}/models did not answer an OpenAI model list "
                f"({{'data': [...]}}) but {json.dumps(models)[:200]!r}: is "
                "rewards.<name>.base_url the server's OpenAI-compatible /v1 root?"
            )
        names = [m.get("id") for m in listed if isinstance(m, dict)]
        if names and self.model not in names:
            raise VLMJudgeError(
                f"vlm_judge: {self.url} serves {quoted(names)}, not {quoted(self.model)}: "
                "set rewards.<name>.model to one of them"
            )

    # -- scoring -----------------------------------------------------------------------------

    def messages(self, image: torch.Tensor, prompt: str, reference: torch.Tensor) -> list[dict]:
        """The chat-completions ``messages`` for one image: the rubric's system message if
        any, then the rubric text, the reference (when sent) and the image."""
        # {scale} first, so that a prompt that happens to contain "{scale}" is sent as written
        text = self.template.replace("{scale}", f"{self.scale:g}").replace("{prompt}", prompt)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        images = [reference, image] if self.send_reference else [image]
        content += [{"type": "image_url", "image_url": {"url": _data_url(im)}} for im in images]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if self.rubric.system is not None:
            messages.insert(0, {"role": "system", "content": self.rubric.system})
        return messages

    def score_one(
        self,
        image: torch.Tensor,
        prompt: str,
        reference: torch.Tensor,
        *,
        cancel: Cancel | None = None,
    ) -> float:
        """``score / scale`` of one image; an unscorable reply raises or gives 0.0
        (``on_unscorable``). ``cancel`` abandons the request from another thread."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(image, prompt, reference),
        }
        if self.rubric.max_tokens is not None:
            body["max_tokens"] = self.rubric.max_tokens
        if self.rubric.temperature is not None:
            body["temperature"] = self.rubric.temperature
        reply = self._request("POST", "/chat/completions", body, cancel=cancel)
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise VLMJudgeError(
                f"vlm_judge: {self.url} replied without choices[0].message.content: "
                f"{json.dumps(reply)[:300]!r}; is rewards.<name>.base_url an OpenAI-compatible "
                "chat-completions server?"
            ) from None
        try:
            return parse_score(str(text), self.scale, pattern=self.rubric.pattern) / self.scale
        except ValueError as exc:
            if self.on_unscorable == "zero":
                log.warning("%s: unscorable reply counted as 0: %s", self.name, exc)
                with self._count_lock:  # score_one runs in max_concurrency threads
                    self.unscorable += 1
                return 0.0
            raise VLMJudgeError(
                f"{self.name} ({self.model}): {exc}; make the rubric (template) ask for "
                "'Score: <number>', raise max_tokens, or set on_unscorable: zero to count "
                "it as 0 (as the released code does)"
            ) from None

    def paint_references(self, references: torch.Tensor) -> torch.Tensor:
        """References painted white outside their subject (:func:`paint_outside`), each
        unique one segmented once; unchanged without a segmenter."""
        if self.segmenter is None:
            return references
        refs = references.float()

        def paint(pos: list[int]) -> torch.Tensor:
            batch = refs[pos]
            return paint_outside(batch, self.segmenter(batch), threshold=self.seg_threshold)

        return self.painted.get_many([image_key(r) for r in refs], paint)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        if not (len(images) == len(prompts) == len(references)):
            raise ValueError(
                f"vlm_judge: {len(images)} images, {len(prompts)} prompts and "
                f"{len(references)} references: give one of each per image"
            )
        if self.send_reference:
            references = self.paint_references(references)
        cancel = Cancel()
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="cgrpo-vlm-judge")
        try:
            jobs = [
                pool.submit(self.score_one, im, p, r, cancel=cancel)
                for im, p, r in zip(images, prompts, references, strict=True)
            ]
            with interruptible():  # a stop signal abandons the wait (and, below, the requests)
                scores = [job.result() for job in jobs]
        except BaseException:  # the first failure, or StopRequested: drop the rest at once
            cancel.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return torch.tensor(scores, dtype=torch.float32, device=images.device)
