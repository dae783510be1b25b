"""``hpsv3``: the HPS-v3 human-preference reward (optional; imported lazily).

HPS-v3 (Ma et al., ICCV 2025) is a Qwen2-VL-7B based preference model; its ``hpsv3``
package returns ``(mu, sigma)`` per (image, prompt) and the score is ``mu``. The package pins
``transformers==4.45.2`` (and needs torchvision, deepspeed, ...), which clashes with this
project's ``transformers>=5``, so two ways to run it are supported:

- **isolated** (recommended): install ``hpsv3`` in its own virtualenv and pass
  ``python="/path/to/hps-venv/bin/python"``. A persistent worker process is started there.
  Each reward call sends all its images through the worker's stdin in memory, as one
  JSON header line (prompts, shape, batch size) followed by the raw 8-bit RGB pixels, so no
  file is written and nothing is encoded; the worker rebuilds PIL images, scores them in
  chunks of ``batch_size`` and answers with one JSON line. The worker runs with
  ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``.
- **in-process**: when ``python`` is not given, ``hpsv3`` is imported here (only works in an
  environment where its pins are satisfied).

Weights are local: ``checkpoint_path`` (``HPSv3.safetensors``) is required, because the
package would otherwise download it, and ``config_path`` should be a copy of the package's
``HPSv3_7B.yaml`` whose ``model_name_or_path`` points at a local Qwen2-VL-7B-Instruct folder.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgrpo.io.images import to_uint8
from cgrpo.rewards.images import check_batch, resolve_device

__all__ = ["HPSv3Error", "HPSv3Reward"]

_HOWTO = (
    "download MizzenAI/HPSv3 (HPSv3.safetensors) and Qwen/Qwen2-VL-7B-Instruct on a machine "
    "with internet, copy them here, and point config_path's model_name_or_path at the Qwen folder"
)
_INSTALL = (
    "make its own virtualenv with `cgrpo setup hpsv3 --venv hps --qwen <Qwen2-VL folder>` (it "
    "pins transformers==4.45.2, which clashes with this project) and pass "
    "python='hps/bin/python', or `pip install hpsv3` into an environment that accepts its pins"
)
_MARK = "@@cgrpo-hpsv3@@ "


class HPSv3Error(ValueError):
    """The HPS-v3 package or worker is missing or broken; one line naming the fix."""


# Runs inside the hpsv3 environment: load once, then answer requests: a JSON header line
# {"prompts", "shape": [n, h, w], "batch_size"} followed by n*h*w*3 bytes of RGB pixels.
_WORKER = r"""
import json, os, sys
MARK = "@@cgrpo-hpsv3@@ "
out = sys.stdout
sys.stdout = sys.stderr  # the package's own prints must not reach the protocol stream
args = json.loads(sys.argv[1])
try:
    from PIL import Image
    from hpsv3 import HPSv3RewardInferencer
    inf = HPSv3RewardInferencer(config_path=args["config_path"],
                                checkpoint_path=args["checkpoint_path"], device=args["device"])
except Exception as exc:
    out.write(MARK + json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n"); out.flush()
    sys.exit(1)
torch = sys.modules.get("torch")
stdin = sys.stdin.buffer
out.write(MARK + json.dumps({"ready": True}) + "\n"); out.flush()
while True:
    line = stdin.readline()
    if not line:
        break
    req = json.loads(line)
    n, h, w = req["shape"]
    size = h * w * 3
    data = stdin.read(n * size)
    try:
        if len(data) != n * size:
            raise EOFError(f"got {len(data)} of {n * size} pixel bytes")
        images = [Image.frombuffer("RGB", (w, h), data[i * size:(i + 1) * size], "raw", "RGB", 0, 1)
                  for i in range(n)]
        scores, b = [], req["batch_size"]
        for lo in range(0, n, b):
            chunk, ps = images[lo:lo + b], req["prompts"][lo:lo + b]
            if torch is not None:
                with torch.no_grad():
                    r = inf.reward(chunk, ps)
            else:
                r = inf.reward(chunk, ps)
            scores += [float(row[0]) for row in r]
        res = {"scores": scores}
    except Exception as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    out.write(MARK + json.dumps(res) + "\n"); out.flush()
"""


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, C-contiguous (what a PNG would hold)."""
    return np.ascontiguousarray(to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())


def _to_pil(images: torch.Tensor) -> list[Any]:
    from PIL import Image

    return [Image.fromarray(a) for a in _to_uint8(images)]


class HPSv3Reward:
    """Human preference of (image, prompt): HPS-v3's ``mu`` (unbounded; ~0-15 in practice).

    Options: ``checkpoint_path`` (required, local ``HPSv3.safetensors``), ``config_path``
    (the package's yaml with a local ``model_name_or_path``; default: the package's own),
    ``python`` (interpreter of a separate hpsv3 environment; default: import in-process),
    ``env`` (extra environment variables for the worker), ``device`` (default: CUDA if
    available), ``batch_size`` (images per inference call). References are not used.
    """

    name = "hpsv3"
    uses_references = False  # prompt following: the reference is never read

    def __init__(
        self,
        checkpoint_path: str | Path | None = None,
        config_path: str | Path | None = None,
        python: str | Path | None = None,
        *,
        env: dict[str, str] | None = None,
        device: str | None = None,
        batch_size: int = 8,
    ) -> None:
        if checkpoint_path is None or not Path(checkpoint_path).is_file():
            raise FileNotFoundError(
                f"hpsv3 reward: checkpoint {str(checkpoint_path)!r} not found "
                f"(expected HPSv3.safetensors); {_HOWTO}"
            )
        if config_path is not None and not Path(config_path).is_file():
            raise FileNotFoundError(
                f"hpsv3 reward: config {str(config_path)!r} not found (expected a copy of "
                f"hpsv3's HPSv3_7B.yaml); {_HOWTO}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.checkpoint_path = str(checkpoint_path)
        self.config_path = None if config_path is None else str(config_path)
        self.device = str(resolve_device(device))
        self.batch_size = batch_size
        self.inferencer: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        if python is None:
            self._start_in_process()
        else:
            self._start_worker(str(python), env or {})

    # -- backends -----------------------------------------------------------------------
    def _start_in_process(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from hpsv3 import HPSv3RewardInferencer  # type: ignore[import-not-found]
        except ImportError as exc:
            raise HPSv3Error(
                f"hpsv3 reward: the optional package 'hpsv3' is not importable ({exc}); {_INSTALL}"
            ) from None
        self.inferencer = HPSv3RewardInferencer(
            config_path=self.config_path, checkpoint_path=self.checkpoint_path, device=self.device
        )

    def _start_worker(self, python: str, env: dict[str, str]) -> None:
        if not Path(python).is_file():
            raise FileNotFoundError(f"hpsv3 reward: interpreter {python!r} not found; {_INSTALL}")
        full_env = dict(os.environ)
        full_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        full_env.update(env)
        args = {
            "config_path": self.config_path,
            "checkpoint_path": self.checkpoint_path,
            "device": self.device,
        }
        self.proc = subprocess.Popen(
            [python, "-c", _WORKER, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=full_env,
        )
        msg = self._read()
        if not msg.get("ready"):
            self.close()
            raise HPSv3Error(
                f"hpsv3 reward: worker failed to start in {python} ({msg.get('error')}); {_INSTALL}"
            )

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        mark = _MARK.encode()
        for line in self.proc.stdout:
            if line.startswith(mark):
                return json.loads(line[len(mark) :].decode("utf-8"))
        code = self.proc.wait()
        return {"error": f"worker exited with code {code} (see its stderr above)"}

    def _score_worker(self, images: torch.Tensor, prompts: list[str]) -> list[float]:
        """All of a call's images in one message: a JSON header line, then the raw pixels."""
        assert self.proc is not None and self.proc.stdin is not None
        arr = _to_uint8(images)
        n, h, w, _ = arr.shape
        head = {"prompts": list(prompts), "shape": [n, h, w], "batch_size": self.batch_size}
        try:
            self.proc.stdin.write(json.dumps(head).encode("utf-8") + b"\n")
            self.proc.stdin.write(arr.tobytes())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise HPSv3Error(
                f"hpsv3 reward: the worker has exited (code {self.proc.poll()}); see its stderr"
            ) from None
        msg = self._read()
        if "scores" not in msg:
            raise HPSv3Error(f"hpsv3 reward: worker error: {msg.get('error')}")
        return [float(s) for s in msg["scores"]]

    def _score_in_process(self, images: torch.Tensor, prompts: list[str]) -> list[float]:
        rows = self.inferencer.reward(_to_pil(images), prompts)
        return [float(r[0]) for r in rows]

    # -- protocol -----------------------------------------------------------------------
    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None = None
    ) -> torch.Tensor:
        """HPS-v3 ``mu`` per image (B,), float32 on the images' device."""
        imgs, prompts, _ = check_batch(images, prompts, references, need_references=False)
        scores: list[float] = []
        with torch.no_grad():
            if self.proc is not None:  # one message; the worker batches
                scores = self._score_worker(imgs, prompts)
            else:
                for i in range(0, imgs.shape[0], self.batch_size):
                    chunk, ps = imgs[i : i + self.batch_size], prompts[i : i + self.batch_size]
                    scores += self._score_in_process(chunk, ps)
        if len(scores) != imgs.shape[0]:
            raise HPSv3Error(f"hpsv3 reward: got {len(scores)} scores for {imgs.shape[0]} images")
        return torch.tensor(scores, dtype=torch.float32, device=images.device)

    def close(self) -> None:
        """Stop the worker process, if any."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass
