"""JSON over HTTP with retries: the transport the remote rewards share (``vlm_judge``'s
OpenAI-compatible server, the ``http`` kind's reward server).

One exchange is attempted ``retries + 1`` times; attempt ``k >= 1`` waits
``backoff * 2 ** (k - 1)`` seconds first. A status in ``retry_status``, a connection error
or a timeout is tried again; any other HTTP error status, or a reply that is not JSON,
ends the exchange at once. Every way it can end without a reply is one
:class:`TransportError`, which each caller words as its own one-line message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["TransportError", "request_json"]


@dataclass
class TransportError(Exception):
    """No JSON reply. ``kind``: ``refused`` (an HTTP status not retried: ``status``,
    ``body``), ``not_json`` (a reply that does not parse), ``no_answer`` (every attempt
    failed; ``last`` says how the last one did)."""

    kind: Literal["refused", "not_json", "no_answer"]
    status: int = 0
    body: bytes = b""
    last: str = ""
    attempts: int = 0


def request_json(
    url: str,
    body: dict[str, Any] | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float,
    retries: int,
    backoff: float,
    retry_status: Collection[int],
) -> dict[str, Any]:
    """The parsed JSON reply of ``method url`` (with ``body`` as JSON), retried as the
    module docstring says; :class:`TransportError` when there is none."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    head = {"Content-Type": "application/json", **(headers or {})}
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data, head, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if exc.code not in retry_status:
                raise TransportError("refused", status=exc.code, body=raw) from None
            last = f"HTTP {exc.code}: {raw.decode('utf-8', 'replace')[:300]!r}"
        except json.JSONDecodeError as exc:
            raise TransportError("not_json", last=str(exc)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    raise TransportError("no_answer", last=last, attempts=retries + 1)
