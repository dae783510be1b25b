"""A stub OpenAI-compatible chat-completions server on 127.0.0.1 for the vlm_judge tests."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image


class Judge:
    """What the stub server does: a queue of behaviours for the next requests (then
    'ok'); 'ok' scores the last image of the user message by its brightness, 10 x mean
    pixel, unless ``answer`` (request body -> reply text) is set."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.delay = 0.0
        self.answer: Callable[[dict], str] | None = None
        self.models: object = {"object": "list", "data": [{"id": "stub-vl"}]}  # GET /models


def _handler(judge: Judge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, code: int, obj: object) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, judge.models)
            else:
                self._send(404, {"error": "no such route"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with judge.lock:
                judge.requests.append(body)
                action = judge.plan.pop(0) if judge.plan else "ok"
                judge.in_flight += 1
                judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
            try:
                time.sleep(judge.delay)
                if action == "slow":
                    time.sleep(1.0)
                if action == "drop":  # close the connection without an answer
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "500":
                    self._send(500, {"error": "overloaded"})
                    return
                urls = [c["image_url"]["url"] for c in body["messages"][-1]["content"]
                        if c["type"] == "image_url"]  # fmt: skip
                png = base64.b64decode(urls[-1].split(",", 1)[1])
                bright = np.asarray(Image.open(io.BytesIO(png))).mean() / 255
                text = "I cannot tell." if action == "garbage" else f"Score: {10 * bright:.2f}"
                if judge.answer is not None and action == "ok":
                    text = judge.answer(body)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})
            finally:
                with judge.lock:
                    judge.in_flight -= 1

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Judge]]:
    judge = Judge()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(judge))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", judge
    httpd.shutdown()
    httpd.server_close()
