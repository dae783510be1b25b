"""``http``: a reward scored by a reward server (:mod:`cgrpo.rewards.server`) over HTTP.

The reward model runs in its own process, on its own GPU(s), started once with
``cgrpo serve-reward --config rewards.yaml --port 8600``; every training process (rank)
scores through it::

    rewards:
      prompt: {kind: http, url: "http://127.0.0.1:8600", reward: prompt, weight: 1.0}

A call is sent as ``ceil(B / batch_size)`` ``POST /score`` requests (images as raw 8-bit
RGB, :mod:`cgrpo.rewards.score_request`), one after another. Each request (connecting,
sending and reading the whole reply, at most 8 MiB) is given up on after ``timeout``
seconds and retried ``retries`` times with exponential backoff (``backoff`` x 2^k seconds)
on connection errors, timeouts, HTTP 429 and 5xx; a refusal (HTTP 4xx: an unknown reward,
a bad request) fails at once; a stop signal whose handler calls
:func:`cgrpo.io.interrupts.stop_now` abandons it. Every failure is one line
(:class:`RemoteRewardError`, a ValueError) naming the url and what to do. At construction
the server's ``/health`` is asked once (``check``): an unreachable server or a reward it
does not serve stops the run before any model loads, and whether the reward reads
references is taken from it (they are sent only then).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from cgrpo.config.errors import quoted
from cgrpo.io.errors import ServiceError
from cgrpo.rewards.http_json import TransportError, is_http_url, request_json
from cgrpo.rewards.score_request import ScoreRequest

__all__ = ["RemoteReward", "RemoteRewardError"]

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteRewardError(ServiceError, ValueError):
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
        # a bad option is bad input (exit 2), not a server that failed (RemoteRewardError: 4)
        if batch_size < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "http reward: need batch_size >= 1, retries >= 0, timeout > 0, backoff >= 0"
            )
        if not is_http_url(url):
            raise ValueError(
                "http reward: rewards.<name>.url must be the http(s) URL of a reward server "
                f"(cgrpo serve-reward), e.g. http://127.0.0.1:8600; got {quoted(url)}"
            )
        self.url, self.reward = url.rstrip("/"), reward
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.batch_size = batch_size
        self.name = f"http_{reward}"
        self.uses_references = True
        if check:
            self._check_server()

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
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
            if exc.kind in ("not_json", "too_big"):
                what = "is not JSON" if exc.kind == "not_json" else f"is too big ({exc.last})"
                raise RemoteRewardError(
                    f"http reward: {where} sent a reply that {what}: is url a reward "
                    "server (cgrpo serve-reward)?"
                ) from None
            if exc.kind == "cancelled":
                raise RemoteRewardError(
                    f"http reward: the request to {where} was abandoned (the run is stopping)"
                ) from None
            raise RemoteRewardError(
                f"http reward: no answer from {where} after {exc.attempts} attempts (last: "
                f"{exc.last}); start the server (`cgrpo serve-reward --config <rewards.yaml> "
                f"--port <port>`) or fix rewards.<name>.url / timeout (now {self.timeout:g} s)"
            ) from None

    def _check_server(self) -> None:
        reply = self._request("GET", "/health", None)
        served = reply.get("rewards") if isinstance(reply, dict) else None
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
        info = served[self.reward]
        self.uses_references = not isinstance(info, dict) or bool(info.get("uses_references", True))

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
            reply = self._request("POST", "/score", body)
            got = reply.get("scores") if isinstance(reply, dict) else None
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
