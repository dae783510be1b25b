"""``cgrpo eval``: a benchmark protocol run on a policy, with per-image metrics.

Protocols (``protocol``):

- ``dreambench``: the single-reference protocol of UNO / Customized-GRPO: 30 subjects x
  25 prompts = 750 pairs, each subject's reference from ``single_reference.json``, the
  object or live-subject prompt templates with the class word ("a backpack in the
  jungle"); the policy is the run's (a FLUX model: ``model.kind=flux``).
- ``embedded``: the embedded world's 8 held-out subjects with its prompt templates.

``images_per_pair`` images per pair (default 1), each from its own fixed noise (seeded by
``seed``, the pair's index and the image's index, so an image does not depend on the
batch it was drawn in). Images are written as PNG and every metric is computed from the
PNG files, so the command is resumable: images already on disk are not drawn again and a
resumed evaluation gives the same numbers as an uninterrupted one.

Metrics are columns, each a reward of the registry (``metrics``: column -> ``{reward:
name, ...options}``): DINO (``dino``), CLIP-I / CLIP-T (``clip`` with ``mode``), DINO-Seg
(``dinov2`` with ``segmenter``), HPS-v3 (``hpsv3``), each where its local weights are
given. Without ``metrics``: the embedded protocol scores the embedded identity and prompt
rewards; DreamBench scores the offline identity metric (EfficientNet-Lite0 cosine, no
download). ``configs/eval_dreambench.yaml`` lists the paper's five columns.

Outputs in ``out_dir``: ``images/<subject>/<prompt>_<k>.png``, ``metrics.csv`` (one row
per image), ``metrics.json`` (overall and per-subject means, which reward each column
is, the axes ``cgrpo compare`` plots), ``per_subject.md`` and ``grid.png`` (reference +
samples). With ``base=true`` the starting policy is evaluated too, under ``base/``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from cgrpo import checkpoint as ckpt
from cgrpo.config import load_config, option
from cgrpo.policies.base import Policy
from cgrpo.rewards import RewardModel
from cgrpo.rewards.base import make_reward_on
from cgrpo.rewards.images import load_image
from cgrpo.rollout import sample_ode
from cgrpo.sde import sigma_schedule
from cgrpo.train_config import EMBEDDED_CONFIG, TrainConfig

__all__ = ["EvalConfig", "EvalError", "evaluate_protocol", "eval_command"]


class EvalError(ValueError):
    """The evaluation cannot run as configured; the message names the setting and the fix."""


@dataclass
class EvalConfig:
    protocol: Literal["embedded", "dreambench"] = option(
        "embedded", "pairs: 'embedded' held-out subjects or 'dreambench' (30 x 25)"
    )
    root: str = option("../shared/data/dreambench", "dreambench: the DreamBench folder")
    prompts_per_subject: int = option(
        0, "prompts per subject (0: all 25 on DreamBench, 32 on the embedded world)"
    )
    images_per_pair: int = option(1, "images drawn per (reference, prompt) pair", unit="images")
    seed: int = option(0, "seed of the per-image noise")
    steps: int = option(0, "sampler steps (0: the run's sampler.num_steps)", unit="steps")
    batch_size: int = option(16, "images drawn and scored per batch", unit="images")
    out_dir: str = option("runs/eval", "output folder (images, metrics, grid)")
    base: bool = option(False, "also evaluate the starting policy, under out_dir/base")
    metrics: dict[str, Any] = option(
        {},
        "columns: name -> {reward: registry name, ...its options}; empty: the protocol's "
        "defaults (embedded rewards; DreamBench: offline identity 'effnet')",
    )
    identity_column: str = option("", "the identity column cgrpo compare plots (x)")
    prompt_column: str = option("", "the prompt-following column cgrpo compare plots (y)")


FIXED_COLUMNS = ("subject", "prompt_index", "prompt_text", "sample", "file")  # metrics.csv

DEFAULT_METRICS: dict[str, dict[str, dict[str, Any]]] = {
    "embedded": {
        "identity": {"reward": "embedded_identity"},
        "prompt": {"reward": "embedded_prompt"},
    },
    "dreambench": {"identity_offline": {"reward": "effnet"}},
}


@dataclass
class Pairs:
    references: torch.Tensor  # (N, 3, H, W) in [0, 1]
    prompts: list[str]
    subjects: list[str]
    prompt_index: list[int]  # index of the prompt within its subject's list


def protocol_pairs(cfg: EvalConfig, train_cfg: TrainConfig) -> Pairs:
    """The (reference, prompt, subject) pairs of the protocol."""
    if cfg.protocol == "embedded":
        if train_cfg.model.kind != "embedded":
            raise EvalError("protocol=embedded needs the embedded generator (model.kind=embedded)")
        from cgrpo.data import EmbeddedData

        n = cfg.prompts_per_subject or 32
        refs, prompts, names = EmbeddedData(
            train_cfg.data.attribute_prob, n, train_cfg.data.eval_seed
        ).eval_pairs()
        return Pairs(refs, prompts, names, [i % n for i in range(len(prompts))])
    from cgrpo.datasets import DreamBenchPairs

    if train_cfg.model.kind == "embedded":
        raise EvalError(
            "protocol=dreambench needs a FLUX policy (the embedded generator only knows its "
            "own world): evaluate a FLUX run, or use protocol=embedded"
        )
    db = DreamBenchPairs(cfg.root, train_cfg.flux.resolution, cfg.prompts_per_subject or 25)
    idx = db.eval_indices()
    refs, prompts, names = db.eval_pairs()
    return Pairs(refs, prompts, names, [i for _ in db.subjects for i in idx])


def build_metrics(cfg: EvalConfig, device: str) -> dict[str, RewardModel]:
    specs = cfg.metrics or DEFAULT_METRICS[cfg.protocol]
    out = {}
    for col, spec in specs.items():
        if col in FIXED_COLUMNS:
            raise EvalError(
                f"metrics.{col}: {col!r} is a fixed column of metrics.csv "
                f"({', '.join(FIXED_COLUMNS)}); name the metric otherwise"
            )
        if not isinstance(spec, dict) or "reward" not in spec:
            raise EvalError(
                f"metrics.{col} must be a mapping with a 'reward' key (a registry name) and "
                f"its options, e.g. {{reward: dino, path: /weights/dino-vits16}}; got {spec!r}"
            )
        opts = {k: v for k, v in spec.items() if k != "reward"}
        out[col] = make_reward_on(spec["reward"], device, **opts)
    return out


def _axes(cfg: EvalConfig, columns: list[str]) -> tuple[str, str]:
    x = cfg.identity_column or columns[0]
    y = cfg.prompt_column or (columns[1] if len(columns) > 1 else "")
    for key, col in (("identity_column", x), ("prompt_column", y)):
        if col and col not in columns:
            raise EvalError(f"{key}={col!r} is not a metrics column; columns: {columns}")
    return x, y


def _image_path(root: Path, subject: str, prompt_index: int, k: int) -> Path:
    return root / "images" / subject / f"{prompt_index:03d}_{k}.png"


def _save_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    arr = (image.clamp(0, 1).permute(1, 2, 0).cpu().float().numpy() * 255).round()
    img = Image.fromarray(arr.astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _check_source(out: Path, source: dict[str, Any]) -> None:
    """Refuse to mix images of another model or other sampling settings into ``out``."""
    path = out / "source.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != source:
            diff = sorted(k for k in set(old) | set(source) if old.get(k) != source.get(k))
            raise EvalError(
                f"{out} holds images drawn with other settings ({', '.join(diff)} differ); "
                "choose another out_dir or delete that folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(source, indent=2)
    ckpt.atomic_write(path, lambda tmp: tmp.write_text(text))


@torch.no_grad()
def draw_images(
    policy: Policy, pairs: Pairs, cfg: EvalConfig, sigmas: torch.Tensor, out: Path, quiet: bool
) -> list[tuple[int, int, Path]]:
    """Draw the images not yet on disk; returns (pair, k, path) for every image."""
    items = [
        (i, k, _image_path(out, pairs.subjects[i], pairs.prompt_index[i], k))
        for i in range(len(pairs.prompts))
        for k in range(cfg.images_per_pair)
    ]
    todo = [it for it in items if not it[2].is_file()]
    shape = policy.latent_shape()
    bar = tqdm(total=len(todo), desc=f"draw {out.name}", disable=quiet or not todo, mininterval=2)
    for lo in range(0, len(todo), cfg.batch_size):
        batch = todo[lo : lo + cfg.batch_size]
        idx = torch.tensor([i for i, _, _ in batch])
        noise = torch.stack(
            [
                torch.randn(
                    shape,
                    generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + i * 1_009 + k),
                )
                for i, k, _ in batch
            ]
        )
        cond = policy.encode_condition(pairs.references[idx], [pairs.prompts[i] for i in idx])
        images = policy.decode(sample_ode(policy, cond, sigmas, noise.to(policy.device)))
        for (_, _, path), img in zip(batch, images, strict=True):
            _save_png(path, img)
        bar.update(len(batch))
    bar.close()
    return items


@torch.no_grad()
def score_images(
    items: list[tuple[int, int, Path]],
    pairs: Pairs,
    metrics: dict[str, RewardModel],
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Every column's value per image, computed from the PNG files."""
    values: dict[str, list[float]] = {c: [] for c in metrics}
    for lo in range(0, len(items), batch_size):
        batch = items[lo : lo + batch_size]
        imgs = torch.stack([load_image(p) for _, _, p in batch])
        idx = [i for i, _, _ in batch]
        refs = pairs.references[idx]
        prompts = [pairs.prompts[i] for i in idx]
        for col, m in metrics.items():
            r = m(imgs, prompts, refs).float().cpu()
            if not torch.isfinite(r).all():
                bad = [str(batch[j][2]) for j in torch.nonzero(~torch.isfinite(r)).flatten()]
                raise EvalError(f"metric {col!r} gave a non-finite value for {bad[:3]}")
            values[col] += r.tolist()
    return {c: np.array(v) for c, v in values.items()}


def _summaries(
    items: list[tuple[int, int, Path]], pairs: Pairs, values: dict[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]:
    overall = {c: float(v.mean()) for c, v in values.items()}
    std = {c: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for c, v in values.items()}
    subjects = [pairs.subjects[i] for i, _, _ in items]
    per: dict[str, dict[str, float]] = {}
    for s in dict.fromkeys(subjects):
        mask = np.array([x == s for x in subjects])
        per[s] = {c: float(v[mask].mean()) for c, v in values.items()}
    return overall, std, per


def _write_outputs(
    out: Path,
    items: list[tuple[int, int, Path]],
    pairs: Pairs,
    values: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> dict[str, Any]:
    cols = list(values)
    overall, std, per = _summaries(items, pairs, values)

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*FIXED_COLUMNS, *cols])
            for j, (i, k, p) in enumerate(items):
                w.writerow(
                    [
                        pairs.subjects[i],
                        pairs.prompt_index[i],
                        pairs.prompts[i],
                        k,
                        str(p.relative_to(out)),
                        *(f"{values[c][j]:.6f}" for c in cols),
                    ]
                )

    ckpt.atomic_write(out / "metrics.csv", write_csv)
    lines = ["| subject | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s, row in per.items():
        lines.append(f"| {s} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |")
    lines.append("| **overall** | " + " | ".join(f"**{overall[c]:.4f}**" for c in cols) + " |")
    lines += ["", _column_legend(meta["columns"]) + " (cgrpo.rewards registry)"]
    table = "\n".join(lines) + "\n"
    ckpt.atomic_write(out / "per_subject.md", lambda tmp: tmp.write_text(table))
    result = {
        **meta,
        "images": len(items),
        "overall": overall,
        "overall_std": std,
        "per_subject": per,
    }
    text = json.dumps(result, indent=2)
    ckpt.atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(text))
    _grid(out, items, pairs)
    return result


def _grid(out: Path, items: list[tuple[int, int, Path]], pairs: Pairs) -> None:
    """grid.png: up to 8 subjects (rows) x reference + their first 8 prompts' first image."""
    from cgrpo.trainer import save_grid

    rows: dict[str, list[Path]] = {}
    first_ref: dict[str, int] = {}
    for i, k, p in items:
        s = pairs.subjects[i]
        if k == 0 and (s in rows or len(rows) < 8) and len(rows.setdefault(s, [])) < 8:
            rows[s].append(p)
            first_ref.setdefault(s, i)
    width = min(len(v) for v in rows.values())
    images = torch.stack([load_image(p) for v in rows.values() for p in v[:width]])
    refs = torch.stack([pairs.references[first_ref[s]] for s in rows for _ in range(width)])
    save_grid(out / "grid.png", refs, images, width)


def evaluate_protocol(
    policy: Policy,
    train_cfg: TrainConfig,
    cfg: EvalConfig,
    metrics: dict[str, RewardModel],
    out: Path,
    source: dict[str, Any],
    quiet: bool = False,
) -> dict[str, Any]:
    """Draw (resumably) and score one policy on the protocol into ``out``."""
    pairs = protocol_pairs(cfg, train_cfg)
    steps = cfg.steps or train_cfg.sampler.num_steps
    _check_source(
        out,
        {
            **source,
            "protocol": cfg.protocol,
            "seed": cfg.seed,
            "steps": steps,
            "shift": train_cfg.sampler.shift,
        },
    )
    items = draw_images(
        policy, pairs, cfg, sigma_schedule(steps, train_cfg.sampler.shift), out, quiet
    )
    values = score_images(items, pairs, metrics, cfg.batch_size)
    x, y = _axes(cfg, list(metrics))
    specs = cfg.metrics or DEFAULT_METRICS[cfg.protocol]
    meta = {
        "protocol": cfg.protocol,
        "pairs": len(pairs.prompts),
        "subjects": len(set(pairs.subjects)),
        "images_per_pair": cfg.images_per_pair,
        "seed": cfg.seed,
        "steps": steps,
        "columns": {c: specs[c]["reward"] for c in metrics},
        "identity_column": x,
        "prompt_column": y,
        **source,
    }
    return _write_outputs(out, items, pairs, values, meta)


def eval_command(
    cfg: EvalConfig, run: Path | None, model_config: Path | None, quiet: bool = False
) -> str:
    """``cgrpo eval``: evaluate ``run``'s latest checkpoint (and its base with ``cfg.base``),
    or the base model of ``model_config``; returns the printed table."""
    from cgrpo.trainer import build_policy

    if cfg.images_per_pair < 1 or cfg.batch_size < 1:
        raise EvalError("images_per_pair and batch_size must be >= 1")
    last = None
    if run is not None:
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(
                f"--run {run}: no config.yaml there; pass a cgrpo train run folder"
            )
        train_cfg = load_config(TrainConfig, run / "config.yaml", [])
        last = ckpt.latest_checkpoint(run / "checkpoints")
        if last is None:
            raise FileNotFoundError(f"--run {run}: no complete checkpoint under {run}/checkpoints")
    else:
        train_cfg = load_config(TrainConfig, model_config or EMBEDDED_CONFIG, [])
    train_cfg.grpo.kl_coef = 0.0  # no reference copy needed
    policy = build_policy(train_cfg)
    metrics = build_metrics(cfg, train_cfg.model.device)
    out = Path(cfg.out_dir)
    base = None
    if cfg.base or last is None:
        base = evaluate_protocol(
            policy,
            train_cfg,
            cfg,
            metrics,
            out / "base" if last else out,
            {"model": "base", "checkpoint": None},
            quiet,
        )
    if last is None:
        result = base
    else:
        tensors, _, _ = ckpt.load_checkpoint(last)
        policy.load_trainable_state_dict(tensors)
        result = evaluate_protocol(
            policy,
            train_cfg,
            cfg,
            metrics,
            out,
            {"model": str(run), "checkpoint": last.name},
            quiet,
        )
        if base is not None:
            result["base"] = base["overall"]
            text = json.dumps(result, indent=2)
            ckpt.atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(text))
    cols = list(result["overall"])
    lines = [
        f"{result['protocol']}: {result['pairs']} pairs x {result['images_per_pair']} "
        f"image(s), {result['steps']} sampler steps"
    ]
    lines.append(f"{'':10s} " + " ".join(f"{c:>18s}" for c in cols))
    if base is not None and last is not None:
        lines.append(f"{'base':10s} " + " ".join(f"{base['overall'][c]:18.4f}" for c in cols))
    lines.append(f"{'model':10s} " + " ".join(f"{result['overall'][c]:18.4f}" for c in cols))
    lines.append(_column_legend(result["columns"]))
    return "\n".join(lines)


def _column_legend(columns: dict[str, str]) -> str:
    """'columns: dino = reward dino, ...': which reward each column is."""
    return "columns: " + ", ".join(f"{c} = reward {r!r}" for c, r in columns.items())
