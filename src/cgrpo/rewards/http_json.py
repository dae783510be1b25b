"""JSON over HTTP with retries: the transport the remote rewards share (``vlm_judge``'s
OpenAI-compatible server, the ``http`` kind's reward server).

One exchange is attempted ``retries + 1`` times; attempt ``k >= 1`` waits
``backoff * 2 ** (k - 1)`` seconds first. A status in ``retry_status``, a connection error
or a timeout is tried again; any other HTTP error status, a reply that is not JSON or one
over :data:`MAX_REPLY_BYTES` ends the exchange at once. Every way it can end without a
reply is one :class:`TransportError`, which each caller words as its own one-line message.

``timeout`` bounds each attempt whole: connecting, sending and reading the reply share one
deadline, so a server that trickles its reply a few bytes at a time is given up on after
``timeout`` seconds like one that says nothing (the host name's DNS lookup is not bounded).
The exchange runs inside :func:`cgrpo.io.interrupts.interruptible`, so a stop signal whose
handler calls ``stop_now`` abandons it in the main thread; a :class:`Cancel` abandons the
exchanges of other threads (it shuts their sockets down), and with :meth:`Cancel.scope`
those a worker thread makes for itself, before or after the cancel.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from cgrpo.io.interrupts import interruptible

__all__ = [
    "MAX_REPLY_BYTES", "Cancel", "TransportError", "is_http_url", "request_json",
]  # fmt: skip

#: The largest reply read (8 MiB): a judge's chat completion or a reward server's scores
#: are a few KB; a bigger reply is refused after reading this much, never read whole.
MAX_REPLY_BYTES = 8 * 1024 * 1024

#: How much of an HTTP error reply is read (its text is quoted, cut, in the message).
_ERROR_BODY_BYTES = 64 * 1024


@dataclass
class TransportError(Exception):
    """No JSON reply. ``kind``: ``refused`` (an HTTP status not retried: ``status``,
    ``body``), ``not_json`` (a reply that does not parse), ``too_big`` (a reply over
    :data:`MAX_REPLY_BYTES`), ``no_answer`` (every attempt failed; ``last`` says how the
    last one did, ``timed_out`` whether it ran out of time), ``cancelled`` (a
    :class:`Cancel` abandoned it)."""

    kind: Literal["refused", "not_json", "too_big", "no_answer", "cancelled"]
    status: int = 0
    body: bytes = b""
    last: str = ""
    attempts: int = 0
    timed_out: bool = False


class Cancel:
    """Abandons the exchanges made with it, from any thread: :meth:`cancel` shuts their
    sockets down (a blocked read returns at once) and no new attempt starts.

    A :class:`Cancel` made while its thread runs inside another's :meth:`scope` is that
    one's child: cancelling the parent cancels it, also when it is made after the parent
    was cancelled (a worker that was still preparing its request when the stop came).
    The scope is per thread: a reward that starts threads of its own hands them its token
    (as ``vlm_judge`` does)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._children: list[Cancel] = []  # held: a child's own children hang on it
        parent = getattr(_SCOPE, "token", None)
        if parent is not None:
            parent._adopt(self)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Abandon every exchange made with this token or its children, now and later."""
        self._event.set()
        with self._lock:
            socks, children = list(self._socks), list(self._children)
        for sock in socks:
            _shut(sock)
        for child in children:
            child.cancel()

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when cancelled meanwhile."""
        self._event.wait(seconds)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """While the body runs (in this thread), every :class:`Cancel` made in it, such as
        the one a request makes for itself, is this one's child."""
        outer = getattr(_SCOPE, "token", None)
        _SCOPE.token = self
        try:
            yield
        finally:
            _SCOPE.token = outer

    def _adopt(self, child: Cancel) -> None:
        with self._lock:
            self._children.append(child)
        if self.cancelled:  # (cancel() set the event before reading the children)
            child.cancel()

    def _add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)
        if self.cancelled:
            _shut(sock)


#: Per thread, the :class:`Cancel` whose :meth:`~Cancel.scope` it runs in (``token``).
_SCOPE = threading.local()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _TooBig(Exception):
    """A reply over :data:`MAX_REPLY_BYTES` (``args[0]``: its size, or the bytes read)."""


class _Deadline:
    """The end of one attempt: :meth:`left` is the time left, TimeoutError once none is."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete reply within {self.seconds:g} s")
        return left


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each given only the time left to the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock, self._deadline = sock, deadline
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open, as http does

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line, headers and body are read by the deadline."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: _Deadline, **kw: Any) -> None:
        super().__init__(sock, *args, **kw)
        self.fp.close()  # the plain reader http.client made: replaced
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


class _DeadlineConnection:
    """Mixed into http.client's connections: connect and send by the deadline, read the
    response by it, and register the socket with the :class:`Cancel`."""

    def __init__(self, *args: Any, deadline: _Deadline, cancel: Cancel, **kw: Any) -> None:
        super().__init__(*args, **kw)  # type: ignore[call-arg]
        self._deadline, self._cancel = deadline, cancel
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)

    def connect(self) -> None:
        self.timeout = self._deadline.left()
        super().connect()  # type: ignore[misc]
        self.sock.settimeout(self._deadline.left())  # type: ignore[attr-defined]
        self._cancel._add(self.sock)  # type: ignore[attr-defined]


class _HTTP(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _HTTPS(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, **kw: Any) -> None:
        super().__init__()
        self._kw = kw

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_HTTP, **self._kw), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, **kw: Any) -> None:
        super().__init__()
        self._kw = kw

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_HTTPS, **self._kw), req, context=self._context)


def is_http_url(url: object) -> bool:
    """Whether ``url`` is an ``http://`` or ``https://`` URL with a host (and, if given, a
    numeric port): what :func:`request_json` can ask."""
    if not isinstance(url, str) or any(c.isspace() for c in url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _read_capped(resp: Any, cap: int) -> bytes:
    """The reply body, refused (:class:`_TooBig`) past ``cap`` bytes without reading on."""
    length = resp.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > cap:
        raise _TooBig(int(length))
    chunks, total = [], 0
    while chunk := resp.read(min(1 << 16, cap + 1 - total)):
        total += len(chunk)
        if total > cap:
            raise _TooBig(total)
        chunks.append(chunk)
    return b"".join(chunks)


def _exchange(req: urllib.request.Request, deadline: _Deadline, cancel: Cancel) -> Any:
    """One attempt: the parsed JSON reply of ``req``, within ``deadline``."""
    kw = {"deadline": deadline, "cancel": cancel}
    opener = urllib.request.build_opener(_HTTPHandler(**kw), _HTTPSHandler(**kw))
    with opener.open(req, timeout=deadline.left()) as resp:
        raw = _read_capped(resp, MAX_REPLY_BYTES)
    return json.loads(raw.decode("utf-8"))


def _error_body(exc: urllib.error.HTTPError) -> bytes:
    """The start of an HTTP error reply (what arrives before the deadline)."""
    try:
        return exc.read(_ERROR_BODY_BYTES)
    except (OSError, http.client.HTTPException):
        return b""


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
    cancel: Cancel | None = None,
) -> Any:
    """The parsed JSON reply of ``method url`` (with ``body`` as JSON), retried as the
    module docstring says; :class:`TransportError` when there is none."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    head = {"Content-Type": "application/json", **(headers or {})}
    cancel = cancel or Cancel()
    last, timed_out = "", False
    with interruptible():
        for attempt in range(retries + 1):
            if attempt:
                cancel.wait(backoff * 2 ** (attempt - 1))
            if cancel.cancelled:
                raise TransportError("cancelled", last=last, attempts=attempt)
            req = urllib.request.Request(url, data, head, method=method)
            try:
                return _exchange(req, _Deadline(timeout), cancel)
            except urllib.error.HTTPError as exc:
                raw = _error_body(exc)
                if exc.code not in retry_status:
                    raise TransportError("refused", status=exc.code, body=raw) from None
                said = raw.decode("utf-8", "replace")[:300]
                last, timed_out = f"HTTP {exc.code}: {said!r}", False
            except _TooBig as exc:
                raise TransportError("too_big", last=f"{exc.args[0]} bytes") from None
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                raise TransportError("not_json", last=str(exc)[:300]) from None
            except (OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                timed_out = isinstance(reason, TimeoutError)
                last = f"no complete reply within {timeout:g} s" if timed_out else (
                    f"{type(reason).__name__}: {reason}"[:300]
                )  # fmt: skip
    if cancel.cancelled:
        raise TransportError("cancelled", last=last, attempts=retries + 1)
    raise TransportError("no_answer", last=last, attempts=retries + 1, timed_out=timed_out)
