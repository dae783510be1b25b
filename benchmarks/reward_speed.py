"""Images per second of the real-photo reward backends, per batch size, on this machine.

Scores batches of DreamBench photos (generated = another photo of the subject, reference =
the subject's single-reference photo). Reference embeddings are cached, so the steady-state
numbers count only the generated images; the first (cold) call that also encodes the
references is reported separately.

Backends that run offline here: ``effnet``, ``effnet+u2netp`` (DINO-Seg style, both images
segmented), and tiny random-weight ``dinov2`` / ``clip`` models (the code-path cost only, not
the cost of the real networks). Real weights: pass ``--dinov2 DIR``, ``--dino DIR``,
``--clip DIR``.

    python benchmarks/reward_speed.py [--batch-sizes 1 8 32] [--repeats 2] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cgrpo.io.images import load_images
from cgrpo.rewards import RewardModel, make_reward

DREAMBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench"


def load_pairs(root: Path, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (generated, reference) photo pairs, cycling over the 30 subjects."""
    refs = json.loads((root / "single_reference.json").read_text())
    gen_paths, ref_paths = [], []
    subjects = sorted(refs)
    for i in range(n):
        s = subjects[i % len(subjects)]
        ref = root / s / refs[s]
        others = [p for p in sorted((root / s).glob("*.jpg")) if p != ref]
        gen_paths.append(others[(i // len(subjects)) % len(others)])
        ref_paths.append(ref)
    return load_images(gen_paths, size), load_images(ref_paths, size)


def tiny_models(folder: Path) -> dict[str, Path]:
    """Tiny random-weight Dinov2 and CLIP folders (the registry's loading path, no download)."""
    import transformers

    torch.manual_seed(0)
    d = folder / "dinov2"
    transformers.Dinov2Model(
        transformers.Dinov2Config(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=14
        )
    ).save_pretrained(d)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = transformers.CLIPTextConfig(
        vocab_size=len(tok),
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **small,
    )
    vision = transformers.CLIPVisionConfig(image_size=224, patch_size=32, **small)
    c = folder / "clip"
    transformers.CLIPModel(
        transformers.CLIPConfig(
            text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
        )
    ).save_pretrained(c)
    tok.save_pretrained(c)
    return {"dinov2": d, "clip": c}


def bench(
    reward: RewardModel,
    gens: torch.Tensor,
    refs: torch.Tensor,
    batch: int,
    repeats: int,
) -> tuple[float, float]:
    """(cold seconds of the first batch, steady images/second over ``repeats`` passes)."""
    prompts = ["a photo of the subject on a beach"] * gens.shape[0]
    t0 = time.perf_counter()
    reward(gens[:batch], prompts[:batch], refs[:batch])  # fills the reference cache
    cold = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, gens.shape[0] - batch + 1, batch):
            reward(gens[i : i + batch], prompts[i : i + batch], refs[i : i + batch])
            n += batch
    return cold, n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--images", type=int, default=32, help="generated images per pass")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--size", type=int, default=256, help="side of the input photos")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dreambench", type=Path, default=DREAMBENCH)
    ap.add_argument("--dinov2", type=Path, default=None, help="local dinov2 folder")
    ap.add_argument("--dino", type=Path, default=None, help="local dino-vits16 folder")
    ap.add_argument("--clip", type=Path, default=None, help="local clip folder")
    ap.add_argument("--skip", nargs="*", default=[], help="backend labels to skip")
    args = ap.parse_args()

    gens, refs = load_pairs(args.dreambench, max(args.images, max(args.batch_sizes)), args.size)
    dev = {"device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = tiny_models(Path(tmp))
        backends: dict[str, Callable[[], RewardModel]] = {
            "effnet": lambda: make_reward("effnet", **dev),
            "effnet+u2netp": lambda: make_reward("effnet", segmenter="u2netp", **dev),
            "dinov2 (tiny random)": lambda: make_reward("dinov2", path=tiny["dinov2"], **dev),
            "clip-T (tiny random)": lambda: make_reward("clip", path=tiny["clip"], **dev),
        }
        if args.dinov2:
            backends["dinov2"] = lambda: make_reward("dinov2", path=args.dinov2, **dev)
            backends["dinov2+u2netp"] = lambda: make_reward(
                "dinov2", path=args.dinov2, segmenter="u2netp", **dev
            )
        if args.dino:
            backends["dino"] = lambda: make_reward("dino", path=args.dino, **dev)
        if args.clip:
            backends["clip-T"] = lambda: make_reward("clip", path=args.clip, **dev)
            backends["clip-I"] = lambda: make_reward("clip", path=args.clip, mode="image", **dev)
        print(
            f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS')}, photos {args.size}px, "
            f"{gens.shape[0]} generated images per pass"
        )
        print(f"{'backend':24s} {'batch':>5s} {'images/s':>9s} {'cold 1st batch s':>17s}")
        for label, build in backends.items():
            if label in args.skip:
                continue
            for b in args.batch_sizes:
                reward = build()
                cold, ips = bench(reward, gens, refs, b, args.repeats)
                print(f"{label:24s} {b:5d} {ips:9.2f} {cold:17.2f}", flush=True)


if __name__ == "__main__":
    main()
