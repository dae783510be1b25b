"""Images per second of the HPS-v3 worker protocol alone (no model).

The ``hpsv3`` reward runs HPS-v3 in its own virtualenv behind a worker process. This
script times that protocol with a stand-in ``hpsv3`` package whose scorer returns a
constant without looking at the images, so what is measured is the transport: the images
leaving this process, reaching the worker as PIL images, and the scores coming back.

    python benchmarks/hps_worker_speed.py [--images 64] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

FAKE = '''
class HPSv3RewardInferencer:
    """Stand-in with the real API; scores nothing (the protocol alone is timed)."""

    def __init__(self, config_path=None, checkpoint_path=None, device="cuda"):
        pass

    def reward(self, images, prompts):
        return [[0.0, 1.0] for _ in images]
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per reward call")
    ap.add_argument("--size", type=int, default=512, help="image side, pixels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="the reward's batch_size")
    args = ap.parse_args()
    from cgrpo.rewards.base import make_reward

    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "hpsv3"
        pkg.mkdir()
        (pkg / "__init__.py").write_text(FAKE)
        ckpt = Path(tmp) / "HPSv3.safetensors"
        ckpt.write_bytes(b"x")
        r = make_reward(
            "hpsv3", checkpoint_path=str(ckpt), device="cpu", python=sys.executable,
            env={"PYTHONPATH": tmp}, batch_size=args.batch_size,
        )  # fmt: skip
        g = torch.Generator().manual_seed(0)
        imgs = torch.rand(args.images, 3, args.size, args.size, generator=g)
        prompts = ["a photo of a dog on the beach"] * args.images
        r(imgs[:2], prompts[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = r(imgs, prompts)
            times.append(time.perf_counter() - t)
        r.close()
    assert out.shape == (args.images,)
    best = min(times)
    print(
        f"hpsv3 worker protocol: {args.images} images of {args.size} px, batch_size "
        f"{args.batch_size}: best of {args.repeats} {best:.3f} s = "
        f"{args.images / best:.1f} images/s"
    )


if __name__ == "__main__":
    main()
