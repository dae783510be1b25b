"""The reward server (cgrpo serve-reward) and the ``http`` reward kind on 127.0.0.1, and
``rewards.<name>.device`` reaching the reward."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cgrpo.cli import main
from cgrpo.data.base import EmbeddedData
from cgrpo.rewards.base import REWARDS, make_reward
from cgrpo.rewards.remote import RemoteReward, RemoteRewardError
from cgrpo.rewards.server import RewardServer, http_server, load_reward_server
from cgrpo.rewards.set import RewardSet
from cgrpo.run import build
from tests.conftest import fast_config

CONFIG = """\
rewards:
  identity: {kind: embedded_identity}
  prompt: {kind: embedded_prompt, weight: 2.0}
  bright: {kind: colour, measure: brightness}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(rewards: RewardServer) -> Iterator[str]:
    httpd = http_server(rewards, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def url(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "rewards.yaml").write_text(CONFIG)
    yield from _serving(load_reward_server(tmp_path / "rewards.yaml", device="cpu"))


def _batch(n: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Embedded-world pairs; images on the 8-bit grid (what the server receives)."""
    refs, prompts = EmbeddedData().sample(n, random.Random(0))
    noisy = refs + 0.2 * torch.randn(refs.shape, generator=torch.Generator().manual_seed(0))
    images = (noisy.clamp(0, 1) * 255).round() / 255
    return images, prompts, (refs.clamp(0, 1) * 255).round() / 255


def test_served_scores_equal_the_in_process_reward(url: str) -> None:
    images, prompts, refs = _batch(7)
    for name, kind, options in [
        ("identity", "embedded_identity", {}),
        ("prompt", "embedded_prompt", {}),
        ("bright", "colour", {"measure": "brightness"}),
    ]:
        local = make_reward(kind, **options)
        for batch_size in (7, 3):  # one request; three (3 + 3 + 1), scored as such here too
            remote = RemoteReward(url, name, batch_size=batch_size)
            assert remote.uses_references == getattr(local, "uses_references", True)
            got = remote(images, prompts, refs)
            parts = [slice(lo, lo + batch_size) for lo in range(0, 7, batch_size)]
            want = torch.cat([local(images[r], prompts[r], refs[r]).float() for r in parts])
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_health_lists_the_rewards(url: str) -> None:
    served = RemoteReward(url, "prompt")._request("GET", "/health", None)["rewards"]
    assert sorted(served) == ["bright", "identity", "prompt"]
    assert served["prompt"]["kind"] == "embedded_prompt"


class _Flaky:
    """Fails its first ``fails`` calls, then scores 1; notes how many calls overlap."""

    name = "flaky"
    uses_references = False

    def __init__(self, fails: int, delay: float = 0.0) -> None:
        self.fails, self.delay, self.calls, self.inside, self.most = fails, delay, 0, 0, 0
        self.guard = threading.Lock()

    def __call__(self, images, prompts, references):
        with self.guard:
            self.calls += 1
            self.inside += 1
            self.most = max(self.most, self.inside)
            call = self.calls
        time.sleep(self.delay)
        with self.guard:
            self.inside -= 1
        if call <= self.fails:
            raise RuntimeError("CUDA out of memory (a passing failure)")
        return torch.ones(len(images))


def test_a_server_error_is_retried(tmp_path: Path) -> None:
    flaky = _Flaky(fails=1)
    for url in _serving(RewardServer({"f": flaky}, {"f": "flaky"})):
        images, prompts, refs = _batch(2)
        scores = RemoteReward(url, "f", retries=2, backoff=0)(images, prompts, refs)
        assert scores.tolist() == [1.0, 1.0] and flaky.calls == 2
        always = _Flaky(fails=10**9)
    for url in _serving(RewardServer({"f": always}, {"f": "flaky"})):
        with pytest.raises(RemoteRewardError) as e:
            RemoteReward(url, "f", retries=2, backoff=0)(images, prompts, refs)
        assert "\n" not in str(e.value) and always.calls == 3
        assert "after 3 attempts" in str(e.value) and "CUDA out of memory" in str(e.value)


def test_one_request_at_a_time_per_reward_model() -> None:
    slow = _Flaky(fails=0, delay=0.05)
    for url in _serving(RewardServer({"f": slow}, {"f": "flaky"})):
        images, prompts, refs = _batch(1)
        clients = [RemoteReward(url, "f") for _ in range(4)]
        threads = [threading.Thread(target=c, args=(images, prompts, refs)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert slow.calls == 4 and slow.most == 1


def test_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RemoteRewardError) as e:
        RemoteReward(url, "prompt", retries=1, backoff=0)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "cgrpo serve-reward" in msg


def test_cgrpo_train_stops_in_one_line_without_the_server(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    args = ["rewards.prompt={kind: http, url: '" + url + "', retries: 0}"]
    cfg = fast_config(tmp_path, tiny_weights, *args)  # the override reads as a config
    assert cfg.rewards["prompt"]["kind"] == "http"
    rc = main(["train", f"model.weights={tiny_weights}", f"run.out_dir={tmp_path}", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 4 and len(err.splitlines()) == 1 and url in err and "serve-reward" in err


def test_an_unknown_reward_is_refused_in_one_line(url: str) -> None:
    with pytest.raises(RemoteRewardError, match=r"serves \['bright', 'identity', 'prompt'\]"):
        RemoteReward(url, "nope")
    unchecked = RemoteReward(url, "nope", check=False, retries=3, backoff=5.0)
    images, prompts, refs = _batch(2)
    start = time.perf_counter()
    with pytest.raises(RemoteRewardError) as e:
        unchecked(images, prompts, refs)
    msg = str(e.value)
    assert "\n" not in msg and "HTTP 400" in msg and "unknown reward 'nope'" in msg
    assert "identity, prompt, bright" in msg
    assert time.perf_counter() - start < 4.0  # a refusal is not retried (a retry waits 5 s)


def test_a_bad_server_config_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.yaml").write_text("model: {kind: embedded}\n")
    assert main(["serve-reward", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected a rewards: section" in err
    assert main(["serve-reward", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_serve_command_answers(tmp_path: Path) -> None:
    (tmp_path / "rewards.yaml").write_text(CONFIG)
    config = str(tmp_path / "rewards.yaml")
    cmd = [sys.executable, "-m", "cgrpo", "serve-reward", "--config", config, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving rewards identity, prompt, bright at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        images, prompts, refs = _batch(3)
        got = RemoteReward(url, "identity")(images, prompts, refs)
        want = make_reward("embedded_identity")(images, prompts, refs)
        assert torch.equal(got, want)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _Placed:
    """Notes the device it is built on and the device of what it is given."""

    seen: list[str] = []

    def __init__(self, device: str = "cpu") -> None:
        self.device, self.name = device, "placed"

    def __call__(self, images, prompts, references):
        self.seen.append(str(images.device))
        return torch.zeros(len(images), dtype=torch.float64)


def test_a_rewards_device_option_places_it(tmp_path: Path, tiny_weights: Path) -> None:
    REWARDS.register("test_placed")(_Placed)
    try:
        # (a device this machine has: a reward's device is checked before it is built)
        cfg = fast_config(tmp_path, tiny_weights, "rewards.a={kind: test_placed, device: meta}",
                          "rewards.b={kind: test_placed}")  # fmt: skip
        rewards = build.build_rewards(cfg, "cpu")
        assert rewards.models["a"].device == "meta" and rewards.models["b"].device == "cpu"
        images, prompts, refs = _batch(2)
        scores = RewardSet({"b": rewards.models["b"]}, {"b": 1.0}).score(images, prompts, refs)
        assert scores["b"].device.type == "cpu" and scores["b"].dtype == torch.float32
    finally:
        del REWARDS.kinds["test_placed"]


def test_the_shipped_hpsv3_server_config_reads() -> None:
    import yaml

    from cgrpo.rewards.spec import parse_rewards

    path = Path(__file__).resolve().parents[2] / "configs" / "reward_servers" / "hpsv3.yaml"
    (spec,) = parse_rewards(yaml.safe_load(path.read_text())["rewards"])
    assert (spec.name, spec.kind, spec.options["device"]) == ("prompt", "hpsv3", "cuda:0")
    assert "cgrpo serve-reward --config configs/reward_servers/hpsv3.yaml" in path.read_text()
