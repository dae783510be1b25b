"""vlm_judge against servers that misbehave on the wire: a reply trickled a byte at a time
is given up on after ``timeout`` for the whole request, a reply over the size cap is
refused without being read whole, and a stop signal (a handler calling ``stop_now``)
abandons a request to a server that hangs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from cgrpo.io.interrupts import StopRequested, stop_now
from cgrpo.rewards.http_json import MAX_REPLY_BYTES
from cgrpo.rewards.vlm_judge import VLMJudgeError, VLMJudgeReward

Behaviour = Callable[[BaseHTTPRequestHandler], None]
_REPLY = json.dumps({"choices": [{"message": {"content": "Score: 5"}}]}).encode()


class _Wire:
    """What the server did: bytes it managed to send; ``stop`` ends its waits."""

    def __init__(self) -> None:
        self.sent = 0
        self.stop = threading.Event()


@pytest.fixture
def wire() -> Iterator[tuple[Callable[[Behaviour], str], _Wire]]:
    """``start(behaviour)`` serves every request with ``behaviour(handler)``; its url."""
    state, servers = _Wire(), []

    def start(behaviour: Behaviour) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._run()

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                self._run()

            def _run(self) -> None:
                try:
                    behaviour(self)
                except OSError:  # the client gave up: what the tests want
                    pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start, state
    state.stop.set()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _send(handler: BaseHTTPRequestHandler, wire: _Wire, data: bytes, *, every: float) -> None:
    for i in range(len(data)):
        if wire.stop.wait(every):
            return
        handler.wfile.write(data[i : i + 1])
        handler.wfile.flush()
        wire.sent += 1


def _score(url: str, **kw: object) -> torch.Tensor:
    judge = VLMJudgeReward(url, "stub-vl", check=False, retries=0, **kw)
    return judge(torch.full((1, 3, 8, 8), 0.5), ["a dog"], torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_trickled_reply_is_given_up_on_after_timeout_for_the_whole_request(wire, part) -> None:
    start, state = wire

    def trickle(h: BaseHTTPRequestHandler) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(_REPLY)}\r\n\r\n".encode()
        if part == "body":
            h.wfile.write(head)
            _send(h, state, _REPLY, every=0.2)
        else:
            _send(h, state, head + _REPLY, every=0.2)

    url = start(trickle)
    t0 = time.monotonic()
    with pytest.raises(VLMJudgeError) as err:
        _score(url, timeout=1.0)
    took = time.monotonic() - t0
    text = str(err.value)
    assert took < 2.0, took  # each byte came within 0.2 s: a per-read timeout never fired
    assert 3 <= state.sent < len(_REPLY)  # it was trickling when given up on
    assert "\n" not in text and f"{url}/chat/completions" in text
    assert "rewards.<name>.timeout=1 s" in text and "raise rewards.<name>.timeout" in text
    assert isinstance(err.value, ValueError)


def test_a_reply_over_the_cap_is_refused_by_its_length_without_reading_it(wire) -> None:
    start, state = wire

    def huge(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(100 * 2**20))
        h.end_headers()
        chunk = b" " * 2**20
        for _ in range(100):
            h.wfile.write(chunk)
            state.sent += len(chunk)

    t0 = time.monotonic()
    with pytest.raises(VLMJudgeError) as err:
        _score(start(huge), timeout=30.0)
    text = str(err.value)
    assert time.monotonic() - t0 < 5.0 and "\n" not in text
    assert f"{100 * 2**20} bytes, over the {MAX_REPLY_BYTES} bytes read" in text
    assert MAX_REPLY_BYTES == 8 * 2**20


def test_a_reply_over_the_cap_without_a_length_is_cut_at_the_cap(wire) -> None:
    start, state = wire

    def endless(h: BaseHTTPRequestHandler) -> None:  # HTTP/1.0 style: the body ends at close
        h.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        chunk = b" " * 2**20
        for _ in range(100):
            h.wfile.write(chunk)
            state.sent += len(chunk)

    with pytest.raises(VLMJudgeError, match=f"{MAX_REPLY_BYTES + 1} bytes, over the") as err:
        _score(start(endless), timeout=30.0)
    assert "\n" not in str(err.value)
    time.sleep(0.2)
    assert state.sent < 40 * 2**20  # the client stopped reading: the server could not go on


def test_a_reply_that_is_a_json_list_is_one_line(wire) -> None:
    start, _ = wire

    def listed(h: BaseHTTPRequestHandler) -> None:
        data = b"[1, 2]"
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    url = start(listed)
    with pytest.raises(VLMJudgeError, match="did not answer an OpenAI model list") as err:
        VLMJudgeReward(url, "stub-vl", retries=0)
    assert "\n" not in str(err.value)
    with pytest.raises(VLMJudgeError, match=r"without choices\[0\]\.message\.content") as err:
        _score(url)
    assert "\n" not in str(err.value)


@pytest.fixture
def stop_handler() -> Iterator[None]:
    """SIGUSR1 handled as preemption does: record it, then stop_now."""
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: stop_now(signum))
    yield
    signal.signal(signal.SIGUSR1, old)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
@pytest.mark.parametrize("where", ["scoring", "construction"])
def test_a_stop_signal_abandons_a_request_to_a_server_that_hangs(wire, stop_handler, where) -> None:
    start, state = wire
    url = start(lambda h: state.stop.wait(60))  # never answers
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(StopRequested) as err:
        if where == "scoring":
            _score(url, timeout=30.0, max_concurrency=2)
        else:
            VLMJudgeReward(url, "stub-vl", timeout=30.0)
    timer.join()
    assert time.monotonic() - t0 < 5.0  # the signal came at 0.3 s; the timeout is 30 s
    assert err.value.signum == signal.SIGUSR1
    deadline = time.monotonic() + 5.0  # the worker threads' requests were cut too
    while time.monotonic() < deadline and any(
        t.name.startswith("cgrpo-vlm-judge") for t in threading.enumerate()
    ):
        time.sleep(0.02)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("cgrpo-vlm-judge")]
