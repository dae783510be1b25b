"""The http reward kind's misconfigurations are one line naming the key: a url that is not
an http(s) URL, a server whose /health is not a reward list."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cgrpo.rewards.remote import RemoteReward, RemoteRewardError


@pytest.mark.parametrize("url", ["not a url", "127.0.0.1:8600", "ftp://h/", "http://h:port/"])
def test_a_url_that_is_not_an_http_url_names_the_key(url: str) -> None:
    with pytest.raises(ValueError, match=r"rewards\.<name>\.url must be the http\(s\) URL") as err:
        RemoteReward(url, "prompt")
    assert not isinstance(err.value, RemoteRewardError)  # bad input (exit 2), not a server's


@pytest.fixture
def health_list() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            data = json.dumps(["prompt"]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_health_reply_that_is_a_json_list_is_one_line(health_list: str) -> None:
    with pytest.raises(RemoteRewardError, match="/health lists no rewards") as err:
        RemoteReward(health_list, "prompt", retries=0)
    assert "\n" not in str(err.value)
