"""A reward server: named reward models on their own GPU(s), scored over HTTP.

``cgrpo serve-reward --config rewards.yaml --host 127.0.0.1 --port 8600`` loads the
rewards of a ``rewards:`` section (any registered kinds, each with its options and
``device``; ``weight`` is ignored here) and answers, with the standard library's
threading HTTP server:

- ``GET /health``: ``{"status": "ok", "rewards": {name: {"kind", "uses_references"}}}``;
- ``POST /score``: a :class:`~cgrpo.rewards.score_request.ScoreRequest` body ->
  ``{"scores": [...]}``.

Every training process (rank) sends its own requests (the ``http`` reward kind,
:class:`cgrpo.rewards.remote.RemoteReward`); they are served in parallel threads, but one
reward model scores one request at a time (a lock per reward), so a GPU model never runs
two batches at once. A bad request is HTTP 400 (an unknown reward: the line names the ones
served), a reward that fails is HTTP 500; both as ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
import yaml

from cgrpo.rewards.images import resolve_device
from cgrpo.rewards.score_request import ScoreRequest, ScoreRequestError
from cgrpo.rewards.set import RewardSet
from cgrpo.rewards.spec import parse_rewards

RewardModel = Any  # cgrpo.rewards.base.RewardModel (a reader of the registry, like set.py)


def reads_references(model: object) -> bool:
    """:func:`cgrpo.rewards.base.reads_references` (that module stays the registry's)."""
    return bool(getattr(model, "uses_references", True))


__all__ = ["RewardServer", "http_server", "load_reward_server", "serve"]

#: The largest request body read (bytes): 64 images of 1024 x 1024 RGB in base64 fit.
MAX_BODY = 1 << 28


class RewardServer:
    """The named rewards a server scores, each behind its own lock."""

    def __init__(self, models: dict[str, RewardModel], kinds: dict[str, str]) -> None:
        if not models:
            raise ValueError("a reward server needs at least one reward")
        self.models, self.kinds = dict(models), dict(kinds)
        self.locks = {name: threading.Lock() for name in self.models}

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers."""
        rewards = {
            name: {
                "kind": self.kinds.get(name, type(m).__name__),
                "uses_references": reads_references(m),
            }
            for name, m in self.models.items()
        }
        return {"status": "ok", "rewards": rewards}

    def score(self, body: Any) -> list[float]:
        """The scores of one ``/score`` body; :class:`ScoreRequestError` for a bad body."""
        req = ScoreRequest.read(body)
        model = self.models.get(req.reward)
        if model is None:
            raise ScoreRequestError(
                f"unknown reward {req.reward!r}: this server scores {', '.join(self.models)} "
                "(set rewards.<name>.reward to one of them)"
            )
        refs = req.references
        if refs is None:
            if reads_references(model):
                raise ScoreRequestError(f"reward {req.reward!r} reads references: send them")
            refs = req.images  # a stand-in of the right length; the reward does not read it
        with self.locks[req.reward], torch.no_grad():
            scores = model(req.images, req.prompts, refs)
        return [float(s) for s in scores.float().cpu().tolist()]


def load_reward_server(path: str | Path, device: str | None = None) -> RewardServer:
    """The rewards of the ``rewards:`` section of the YAML file ``path``, each on its
    ``device`` option, else on ``device`` (default: CUDA when available)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reward server config {str(path)!r} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    section = raw.get("rewards") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise ValueError(
            f"{path}: expected a rewards: section, e.g. rewards: {{prompt: {{kind: hpsv3, "
            "checkpoint_path: ..., device: cuda:0}}"
        )
    specs = parse_rewards(section)
    built = RewardSet.build(specs, str(resolve_device(device)))
    return RewardServer(built.models, {s.name: s.kind for s in specs})


class _Handler(BaseHTTPRequestHandler):
    server: Any  # the ThreadingHTTPServer, with .rewards

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path.rstrip("/") == "/health":
            self._reply(200, self.server.rewards.health())
        else:
            self._reply(404, {"error": f"no {self.path}: GET /health or POST /score"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self._reply(404, {"error": f"no {self.path}: GET /health or POST /score"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_BODY:
                raise ScoreRequestError(
                    f"body of {length} bytes: send 1..{MAX_BODY} (a smaller batch_size)"
                )
            body = json.loads(self.rfile.read(length).decode("utf-8"))
            scores = self.server.rewards.score(body)
        except (ScoreRequestError, json.JSONDecodeError, UnicodeDecodeError) as e:
            self._reply(400, {"error": _one_line(e)})
        except Exception as e:  # noqa: BLE001 - the reward's failure goes to the client
            self._reply(500, {"error": f"the reward failed: {type(e).__name__}: {_one_line(e)}"})
        else:
            self._reply(200, {"scores": scores})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def http_server(
    rewards: RewardServer, host: str = "127.0.0.1", port: int = 8600, *, verbose: bool = False
) -> ThreadingHTTPServer:
    """A threading HTTP server of ``rewards`` bound to ``host:port`` (port 0: a free one);
    run it with ``serve_forever()``."""
    try:
        httpd = ThreadingHTTPServer((host, port), _Handler)
    except OSError as e:
        raise ValueError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --port"
        ) from None
    httpd.daemon_threads = True
    httpd.rewards = rewards  # type: ignore[attr-defined]
    httpd.verbose = verbose  # type: ignore[attr-defined]
    return httpd


def serve(
    config: str | Path, host: str = "127.0.0.1", port: int = 8600, *, verbose: bool = False
) -> None:
    """Load the rewards of ``config`` and serve them until interrupted."""
    rewards = load_reward_server(config)
    httpd = http_server(rewards, host, port, verbose=verbose)
    names = ", ".join(rewards.models)
    print(
        f"serving rewards {names} at http://{host}:{httpd.server_port} (GET /health, POST /score)",
        flush=True,
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
