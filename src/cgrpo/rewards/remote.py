"""``http``: a reward scored by a reward server (:mod:`cgrpo.rewards.server`) over HTTP.

The reward model runs in its own process, on its own GPU(s), started once with
``cgrpo serve-reward --config rewards.yaml --port 8600``; every training process (rank)
scores through it::

    rewards:
      prompt: {kind: http, url: "http://127.0.0.1:8600", reward: prompt, weight: 1.0}

A call is sent as ``ceil(B / batch_size)`` ``POST /score`` requests (images as raw 8-bit
RGB, :mod:`cgrpo.rewards.score_request`), one after another. Each request times out after
``timeout`` seconds and is retried ``retries`` times with exponential backoff (``backoff``
x 2^k seconds) on connection errors, timeouts, HTTP 429 and 5xx; a refusal (HTTP 4xx: an
unknown reward, a bad request) fails at once. Every failure is one line
(:class:`RemoteRewardError`, a ValueError) naming the url and what to do. At construction
the server's ``/health`` is asked once (``check``): an unreachable server or a reward it
does not serve stops the run before any model loads, and whether the reward reads
references is taken from it (they are sent only then).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from cgrpo.rewards.http_json import TransportError, request_json
from cgrpo.rewards.score_request import ScoreRequest

__all__ = ["RemoteReward", "RemoteRewardError"]

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteRewardError(ValueError):
    """The reward server cannot be reached, refuses, or answers without scores."""


class RemoteReward:
    """One named reward of a reward server.

    ``url``: the server's root (``http://host:port``); ``reward``: the name the server
    gives it (its config's ``rewards:`` key); ``batch_size``: images per request;
    ``timeout`` (seconds per request), ``retries``, ``backoff`` (seconds, doubled per
    retry); ``check``: ask ``/health`` at construction."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8600",
        reward: str = "prompt",
        *,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 1.0,
        batch_size: int = 32,
        check: bool = True,
    ) -> None:
        if batch_size < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise RemoteRewardError(
                "http reward: need batch_size >= 1, retries >= 0, timeout > 0, backoff >= 0"
            )
        self.url, self.reward = url.rstrip("/"), reward
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.batch_size = batch_size
        self.name = f"http_{reward}"
        self.uses_references = True
        if check:
            self._check_server()

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One exchange with retries (:func:`~cgrpo.rewards.http_json.request_json`); the
        parsed JSON reply, else one :class:`RemoteRewardError` line."""
        where = f"{self.url}{path}"
        try:
            return request_json(
                where, body, method=method, timeout=self.timeout, retries=self.retries,
                backoff=self.backoff, retry_status=_RETRY_STATUS,
            )  # fmt: skip
        except TransportError as exc:
            if exc.kind == "refused":
                said = _error_of(exc.body)
                raise RemoteRewardError(
                    f"http reward: {where} refused (HTTP {exc.status}): {said}"
                ) from None
            if exc.kind == "not_json":
                raise RemoteRewardError(
                    f"http reward: {where} sent a reply that is not JSON: is url a reward "
                    "server (cgrpo serve-reward)?"
                ) from None
            raise RemoteRewardError(
                f"http reward: no answer from {where} after {exc.attempts} attempts (last: "
                f"{exc.last}); start the server (`cgrpo serve-reward --config <rewards.yaml> "
                "--port <port>`) or fix rewards.<name>.url / timeout"
            ) from None

    def _check_server(self) -> None:
        served = self._request("GET", "/health", None).get("rewards")
        if not isinstance(served, dict):
            raise RemoteRewardError(
                f"http reward: {self.url}/health lists no rewards: is url a reward server "
                "(cgrpo serve-reward)?"
            )
        if self.reward not in served:
            raise RemoteRewardError(
                f"http reward: {self.url} serves {sorted(served)}, not {self.reward!r}: set "
                "rewards.<name>.reward to one of them"
            )
        self.uses_references = bool(served[self.reward].get("uses_references", True))

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        """The server's score of each image (B,), float32 on the images' device."""
        if len(images) != len(prompts) or (self.uses_references and len(references) != len(images)):
            raise ValueError(
                f"http reward: {len(images)} images, {len(prompts)} prompts and "
                f"{len(references)} references: give one of each per image"
            )
        scores: list[float] = []
        for lo in range(0, len(images), self.batch_size):
            rows = slice(lo, lo + self.batch_size)
            refs = references[rows] if self.uses_references else None
            body = ScoreRequest(self.reward, images[rows], prompts[rows], refs).body()
            got = self._request("POST", "/score", body).get("scores")
            n = len(images[rows])
            if not isinstance(got, list) or len(got) != n:
                raise RemoteRewardError(
                    f"http reward: {self.url}/score answered {str(got)[:80]!r} for {n} images"
                )
            scores += [float(s) for s in got]
        return torch.tensor(scores, dtype=torch.float32, device=images.device)


def _error_of(raw: bytes) -> str:
    """The server's ``error`` line of an error reply (else its first 300 characters)."""
    text = raw.decode("utf-8", "replace")
    try:
        said = json.loads(text).get("error")
    except (json.JSONDecodeError, AttributeError):
        said = None
    return str(said) if said else " ".join(text.split())[:300]
