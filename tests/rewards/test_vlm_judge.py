"""The vlm_judge reward against a real local HTTP server speaking the chat-completions API."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgrpo.rewards.vlm_judge import VLMJudgeError, VLMJudgeReward, parse_score
from tests.conftest import fast_config


class Judge:
    """What the stub server does: a queue of behaviours for the next requests (then
    'ok'); 'ok' scores an image by its brightness, 10 x mean pixel."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.delay = 0.0


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
                self._send(200, {"object": "list", "data": [{"id": "stub-vl"}]})
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
                urls = [c["image_url"]["url"] for c in body["messages"][0]["content"]
                        if c["type"] == "image_url"]  # fmt: skip
                png = base64.b64decode(urls[-1].split(",", 1)[1])
                bright = np.asarray(Image.open(io.BytesIO(png))).mean() / 255
                text = "I cannot tell." if action == "garbage" else f"Score: {10 * bright:.2f}"
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


def _images(n: int) -> torch.Tensor:
    return torch.linspace(0.1, 0.9, n).view(n, 1, 1, 1).expand(n, 3, 8, 8).clone()


def test_scores_images_concurrently_within_the_bound(server) -> None:
    url, judge = server
    judge.delay = 0.05
    r = VLMJudgeReward(url, "stub-vl", max_concurrency=3, timeout=5)
    imgs = _images(9)
    out = r(imgs, ["a dog"] * 9, torch.zeros(9, 3, 8, 8))
    torch.testing.assert_close(out, imgs[:, 0, 0, 0], atol=3e-3, rtol=0)  # 8-bit PNG, 2 decimals
    assert len(judge.requests) == 9 and 1 < judge.max_in_flight <= 3
    content = judge.requests[0]["messages"][0]["content"]
    assert content[0]["type"] == "text" and '"a dog"' in content[0]["text"]
    assert [c["type"] for c in content] == ["text", "image_url"]  # prompt rubric: no reference
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    ident = VLMJudgeReward(url, "stub-vl", rubric="identity")
    ident(imgs[:1], ["a dog"], torch.zeros(1, 3, 8, 8))
    assert [c["type"] for c in judge.requests[-1]["messages"][0]["content"]] == [
        "text", "image_url", "image_url"]  # fmt: skip


def test_retries_slow_replies_500s_and_dropped_connections(server) -> None:
    url, judge = server
    r = VLMJudgeReward(url, "stub-vl", timeout=0.5, retries=2, backoff=0.01)
    judge.plan = ["500", "drop"]  # two failures, then an answer
    assert r(_images(1), ["x"], torch.zeros(1, 3, 8, 8)).item() == pytest.approx(0.1, abs=2e-3)
    judge.plan = ["slow"]  # one timeout, then an answer
    assert r(_images(1), ["x"], torch.zeros(1, 3, 8, 8)).item() == pytest.approx(0.1, abs=2e-3)
    judge.plan = ["slow", "slow", "500"]  # retries exhausted: one clear error
    with pytest.raises(VLMJudgeError, match="after 3 attempts.*HTTP 500"):
        r(_images(1), ["x"], torch.zeros(1, 3, 8, 8))
    patient = VLMJudgeReward(url, "stub-vl", timeout=3, retries=0)
    judge.plan = ["slow"]  # a slow reply within the timeout is simply waited for
    assert patient(_images(1), ["x"], torch.zeros(1, 3, 8, 8)).item() == pytest.approx(
        0.1, abs=2e-3
    )


def test_unparsable_reply_fails_quoting_it(server) -> None:
    url, judge = server
    judge.plan = ["garbage"]
    r = VLMJudgeReward(url, "stub-vl", retries=3, backoff=0.01)
    with pytest.raises(VLMJudgeError, match="I cannot tell"):
        r(_images(1), ["x"], torch.zeros(1, 3, 8, 8))
    assert len(judge.requests) == 1  # a bad reply is not retried
    assert parse_score("Score: 7", 10) == 7 and parse_score("**Score:** 8.5/10", 10) == 8.5
    assert parse_score("6", 10) == 6
    for bad in ("Score: 11", "between 3 and 4", ""):
        with pytest.raises(ValueError):
            parse_score(bad, 10)


def test_unreachable_server_and_wrong_model_fail_at_construction(server) -> None:
    url, _ = server
    with pytest.raises(VLMJudgeError, match="serves \\['stub-vl'\\]"):
        VLMJudgeReward(url, "other-model")
    with pytest.raises(VLMJudgeError, match="no answer from http://127.0.0.1:9/v1/models"):
        VLMJudgeReward("http://127.0.0.1:9/v1", "stub-vl", retries=1, backoff=0.01, timeout=1)


def test_trains_embedded_steps_as_a_third_named_reward(
    server, tmp_path: Path, tiny_weights: Path
) -> None:
    from cgrpo.train.trainer import GRPOTrainer

    url, judge = server
    cfg = fast_config(
        tmp_path, tiny_weights, "run.eval=false",
        f"rewards.judge={{kind: vlm_judge, weight: 0.5, base_url: '{url}', model: stub-vl}}",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    assert trainer.rewards.names == ["identity", "prompt", "judge"]
    trainer.train(quiet=True)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert "reward/judge/mean" in head and len(rows) == 3
    assert len(judge.requests) == 2 * 2 * 4  # steps x pairs x G
    vals = [float(r.split(",")[head.index("reward/judge/mean")]) for r in rows[1:]]
    assert all(0 < v < 1 for v in vals)
