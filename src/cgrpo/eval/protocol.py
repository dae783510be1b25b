"""``cgrpo eval``: a benchmark protocol run on a policy, with per-image metrics.

Protocols (``protocol``):

- ``dreambench``: the single-reference protocol of UNO / Customized-GRPO: 30 subjects x
  25 prompts = 750 pairs, each subject's reference from ``single_reference.json``, the
  object or live-subject prompt templates with the class word ("a backpack in the
  jungle"); the policy is the run's (a FLUX model: ``model.kind=flux``).
- ``embedded``: the embedded world's 8 held-out subjects with its prompt templates.

Drawing and scoring is :class:`cgrpo.eval.evaluator.Evaluator`, the same code path as
training's held-out evaluation: with a run's defaults (``0`` / ``null`` settings take the
run's own: prompts per subject, images per pair = ``data.eval_noises``, seed =
``data.eval_seed``, steps, time shift = ``sampler.shift``, guidance = ``flux.guidance``,
batch size, and the run's rewards as metrics on the embedded protocol) ``cgrpo eval --run
R base=true`` prints the very table ``cgrpo train`` printed for ``R``. The checkpoint's
EMA weights are evaluated when it has them (``ema=false``: the raw weights). Images are
written as PNG and scored as the 8-bit images the PNGs hold, so the command is resumable:
images already on disk are not drawn again and a resumed evaluation gives the same
numbers as an uninterrupted one. ``steps``, ``shift`` (a number, ``auto`` / ``uno``:
:mod:`cgrpo.sampling.shift`) and ``guidance`` change the sampler for this command only;
``configs/eval_dreambench.yaml`` sets them as the paper evaluated (25, ``uno``, 4).

Metrics are columns, each a reward of the registry (``metrics``: column -> ``{kind:
name, ...options}``, as a train config's ``rewards:``): DINO
(``dino``), CLIP-I / CLIP-T (``clip`` with ``mode``), DINO-Seg (``dinov2`` with
``segmenter``), HPS-v3 (``hpsv3``), each where its local weights are given. Without
``metrics``: the embedded protocol scores the run's rewards; DreamBench scores the
offline identity metric (EfficientNet-Lite0 cosine, no download).
``configs/eval_dreambench.yaml`` lists the paper's five columns.

Outputs in ``out_dir``: ``images/<subject>/<prompt>_<k>.png``, ``metrics.csv`` (one row
per image), ``metrics.json`` (overall and per-subject means, which reward each column
is, the axes ``cgrpo compare`` plots), ``per_subject.md`` and ``grid.png`` (reference +
samples). With ``base=true`` the starting policy is evaluated too, under ``base/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgrpo.config.core import load_config
from cgrpo.data.references import reward_view
from cgrpo.eval.config import EvalConfig
from cgrpo.eval.evaluator import (
    EvalError,
    EvalPairs,
    EvalResult,
    Evaluator,
    build_evaluator,
    grid_items,
)
from cgrpo.eval.png_store import PngStore
from cgrpo.eval.summary import summary_table
from cgrpo.io import checkpoint as ckpt
from cgrpo.io.atomic import atomic_write
from cgrpo.io.devices import check_device
from cgrpo.io.images import load_image
from cgrpo.io.paths import check_output_dir
from cgrpo.io.run_log import save_grid
from cgrpo.policies.base import Policy
from cgrpo.rewards.set import RewardSet
from cgrpo.rewards.spec import parse_rewards
from cgrpo.run.build import build_policy, keeps_aspect, subject_split
from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig
from cgrpo.sampling.shift import SHIFT_RULES, resolution_shift, uno_seq_len

__all__ = ["EvalError", "build_metrics", "evaluate_protocol", "eval_command"]


FIXED_COLUMNS = ("subject", "prompt_index", "prompt_text", "sample", "file")  # metrics.csv

DREAMBENCH_METRICS: dict[str, dict[str, Any]] = {"identity_offline": {"kind": "effnet"}}


def protocol_pairs(cfg: EvalConfig, train_cfg: TrainConfig) -> EvalPairs:
    """The (reference, prompt, subject) pairs of the protocol."""
    if cfg.protocol == "embedded":
        if train_cfg.model.kind != "embedded":
            raise EvalError("protocol=embedded needs the embedded generator (model.kind=embedded)")
        from cgrpo.data.base import EmbeddedData

        d = train_cfg.data
        n = cfg.prompts_per_subject or d.eval_prompts_per_subject
        data = EmbeddedData(d.attribute_prob, n, d.eval_seed, split=subject_split(train_cfg))
        refs, prompts, names = data.eval_pairs()
        return EvalPairs.from_lists(refs, prompts, names, truth=data.eval_truth())
    from cgrpo.data.dreambench import DreamBenchPairs

    if train_cfg.model.kind == "embedded":
        raise EvalError(
            "protocol=dreambench needs a FLUX policy (the embedded generator only knows its "
            "own world): evaluate a FLUX run, or use protocol=embedded"
        )
    db = DreamBenchPairs(
        cfg.root, train_cfg.flux.resolution, cfg.prompts_per_subject or 25,
        keep_aspect=keeps_aspect(train_cfg),
    )  # fmt: skip
    idx = db.eval_indices()
    refs, prompts, names = db.eval_pairs()
    return EvalPairs(refs, prompts, names, [i for _ in db.subjects for i in idx])


def metric_specs(cfg: EvalConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    """The columns' reward entries (``{kind, ...}``, read by :func:`parse_rewards`)."""
    if not cfg.metrics:
        return dict(train_cfg.rewards) if cfg.protocol == "embedded" else DREAMBENCH_METRICS
    out = {}
    for col, spec in cfg.metrics.items():
        if col in FIXED_COLUMNS:
            raise EvalError(
                f"metrics.{col}: {col!r} is a fixed column of metrics.csv "
                f"({', '.join(FIXED_COLUMNS)}); name the metric otherwise"
            )
        if not isinstance(spec, dict) or not ({"kind", "reward"} & set(spec)):  # reward: named
            raise EvalError(
                f"metrics.{col} must be a mapping with a 'kind' key (a reward registry name) "
                f"and its options, e.g. {{kind: dino, path: /weights/dino-vits16}}; got {spec!r}"
            )
        out[col] = dict(spec)
    return out


def build_metrics(cfg: EvalConfig, device: str, train_cfg: TrainConfig | None = None) -> RewardSet:
    """The metric columns as a :class:`RewardSet` (option names checked before loading)."""
    train_cfg = train_cfg or TrainConfig()
    specs = parse_rewards(metric_specs(cfg, train_cfg), where="metrics")
    return RewardSet.build(specs, device, where="metrics")


def _axes(cfg: EvalConfig, train_cfg: TrainConfig, columns: list[str]) -> tuple[str, str]:
    pair = list(train_cfg.method.pair)
    default = pair if all(p in columns for p in pair) else (columns + [""])[:2]
    x = cfg.identity_column or default[0]
    y = cfg.prompt_column or default[1]
    for key, col in (("identity_column", x), ("prompt_column", y)):
        if col and col not in columns:
            raise EvalError(f"{key}={col!r} is not a metrics column; columns: {columns}")
    return x, y


def check_settings(cfg: EvalConfig, train_cfg: TrainConfig) -> None:
    """EvalError for settings the run's model cannot take (checked before any model loads)."""
    cfg.validate()
    if train_cfg.model.kind != "embedded":
        return
    if cfg.guidance is not None:
        raise EvalError(
            f"guidance={cfg.guidance}: the embedded generator has no guidance embedding; "
            "leave guidance null (it is for FLUX runs)"
        )
    if cfg.shift in SHIFT_RULES:
        raise EvalError(
            f"shift={cfg.shift}: the resolution rule counts FLUX image tokens; give the "
            "embedded generator a number or null (the run's sampler.shift)"
        )


def eval_shift(cfg: EvalConfig, train_cfg: TrainConfig, policy: Policy) -> float:
    """The time shift of the evaluation's sigma schedule: ``cfg.shift`` as a number, else
    FLUX's resolution rule ``e^mu``, ``mu = 0.5 + 0.65 * (n - 256) / 3840``, on ``n`` = the
    policy's image tokens (``auto``: 1,024 at 512 px, 1.878) or ``n = (px // 8)^2 // 256``
    for ``px = flux.resolution``, the count UNO's pipeline passes (``uno``: 16 at 512 px,
    1.583), else (null) the run's ``sampler.shift`` (:mod:`cgrpo.sampling.shift`)."""
    if cfg.shift is None:
        return float(train_cfg.sampler.shift)
    if cfg.shift == "auto":
        return resolution_shift(policy.latent_shape()[0])
    if cfg.shift == "uno":
        px = train_cfg.flux.resolution
        return resolution_shift(uno_seq_len(px, px))
    return float(cfg.shift)


def eval_guidance(cfg: EvalConfig, train_cfg: TrainConfig) -> float | None:
    """The guidance the evaluation draws with: ``cfg.guidance``, else the run's
    ``flux.guidance`` (None: the embedded generator, which has no guidance)."""
    if cfg.guidance is not None:
        return float(cfg.guidance)
    return None if train_cfg.model.kind == "embedded" else float(train_cfg.flux.guidance)


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
    atomic_write(path, lambda tmp: tmp.write_text(text))


def evaluator_for(
    cfg: EvalConfig, train_cfg: TrainConfig, pairs: EvalPairs, *, metrics: RewardSet, shift: float
) -> Evaluator:
    """The run's evaluator with this command's settings where they are set (``shift``: the
    resolved :func:`eval_shift`)."""
    return build_evaluator(
        train_cfg,
        pairs,
        metrics,
        dist=None,
        images_per_pair=cfg.images_per_pair,
        steps=cfg.steps,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        micro_batch_size=cfg.micro_batch_size,
        shift=shift,
        guidance=cfg.guidance,
        ode_solver=cfg.ode_solver,
    )


def _write_outputs(
    out: Path, store: PngStore, pairs: EvalPairs, *, res: EvalResult, meta: dict[str, Any]
) -> dict[str, Any]:
    cols = res.names
    k = res.images_per_pair
    summary = res.summary()
    subjects = [pairs.subjects[j // k] for j in range(res.pairs * k)]
    per: dict[str, dict[str, float]] = {}
    for s in dict.fromkeys(subjects):
        mask = np.array([x == s for x in subjects])
        per[s] = {c: float(res.per_image[c].numpy()[mask].mean()) for c in cols}

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*FIXED_COLUMNS, *cols])
            for j in range(res.pairs * k):
                i = j // k
                w.writerow(
                    [
                        pairs.subjects[i], pairs.prompt_index[i], pairs.prompts[i], j % k,
                        str(store.path(j).relative_to(out)),
                        *(f"{float(res.per_image[c][j]):.6f}" for c in cols),
                    ]
                )  # fmt: skip

    atomic_write(out / "metrics.csv", write_csv)
    overall = summary["overall"]
    lines = ["| subject | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s, row in per.items():
        lines.append(f"| {s} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |")
    lines.append("| **overall** | " + " | ".join(f"**{overall[c]:.4f}**" for c in cols) + " |")
    lines += ["", _column_legend(meta["columns"]) + " (cgrpo.rewards registry)"]
    table = "\n".join(lines) + "\n"
    atomic_write(out / "per_subject.md", lambda tmp: tmp.write_text(table))
    result = {**meta, **summary, "per_subject": per}
    text = json.dumps(result, indent=2)
    atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(text))
    items, width = grid_items(pairs, k)
    if items:
        images = torch.stack([load_image(store.path(j)) for j in items])
        refs = pairs.references[[j // k for j in items]]
        save_grid(out / "grid.png", reward_view(refs), images, group_size=width)
    return result


def evaluate_protocol(
    policy: Policy,
    train_cfg: TrainConfig,
    cfg: EvalConfig,
    *,
    metrics: RewardSet,
    out: Path,
    source: dict[str, Any],
    quiet: bool = False,
    pairs: EvalPairs | None = None,
) -> dict[str, Any]:
    """Draw (resumably) and score one policy on the protocol into ``out`` (its ``pairs``,
    when the caller has already read them)."""
    check_settings(cfg, train_cfg)
    pairs = pairs if pairs is not None else protocol_pairs(cfg, train_cfg)
    shift = eval_shift(cfg, train_cfg, policy)
    ev = evaluator_for(cfg, train_cfg, pairs, metrics=metrics, shift=shift)
    steps = len(ev.sigmas) - 1
    text = "\n".join(f"{s}\t{p}" for s, p in zip(pairs.subjects, pairs.prompts, strict=True))
    settings = {
        "protocol": cfg.protocol, "seed": ev.seed, "steps": steps, "shift": shift,
        "pairs": len(pairs), "prompts_sha1": hashlib.sha1(text.encode()).hexdigest(),
    }  # fmt: skip
    guidance = eval_guidance(cfg, train_cfg)
    if guidance is not None:  # none on the embedded generator
        settings["guidance"] = guidance
    if ev.solver != "euler":  # folders drawn before the setting existed stay resumable
        settings["ode_solver"] = ev.solver
    _check_source(out, {**source, **settings})
    store = PngStore(out, pairs, ev.k)
    res = ev.run(policy, store=store, quiet=quiet, desc=f"eval {out.name}")
    x, y = _axes(cfg, train_cfg, metrics.names)
    specs = metric_specs(cfg, train_cfg)
    meta = {
        **settings,
        "subjects": len(set(pairs.subjects)),
        "columns": {c: specs[c]["kind"] for c in metrics.names},
        "identity_column": x,
        "prompt_column": y,
        **source,
    }
    truth = ev.truth_summary()
    if truth is not None:
        meta["truth"] = truth
    return _write_outputs(out, store, pairs, res=res, meta=meta)


def eval_command(
    cfg: EvalConfig, run: Path | None, model_config: Path | None, *, quiet: bool = False
) -> str:
    """``cgrpo eval``: evaluate ``run``'s latest checkpoint (and its base with ``cfg.base``),
    or the base model of ``model_config``; returns the printed table."""
    cfg.validate()
    last = None
    if run is not None:
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(
                f"--run {run}: no config.yaml there; pass a cgrpo train run folder"
            )
        train_cfg = load_config(TrainConfig, run / "config.yaml", [])
        last = ckpt.latest_checkpoint(run / "checkpoints")
        if last is None:
            root = Path(run) / "checkpoints"
            detail = ckpt.no_checkpoint_detail(root)
            raise FileNotFoundError(f"--run {run}: no complete checkpoint under {root}{detail}")
    else:
        train_cfg = load_config(TrainConfig, model_config or EMBEDDED_CONFIG, [])
    check_settings(cfg, train_cfg)
    check_output_dir(cfg.out_dir, "out_dir")
    check_device(train_cfg.model.device, "model.device")
    if train_cfg.run.threads:  # as the run evaluated (thread counts change float sums)
        torch.set_num_threads(train_cfg.run.threads)
    # everything that can fail on a file before the transformer loads: the pairs, the
    # FLUX folders, the metric models
    pairs = protocol_pairs(cfg, train_cfg)
    if train_cfg.model.kind == "flux":
        train_cfg.flux.check_files()
    metrics = build_metrics(cfg, train_cfg.model.device, train_cfg)
    policy = build_policy(train_cfg, keep_reference=False)
    out = Path(cfg.out_dir)
    base = None
    if cfg.base or last is None:
        src = {"model": "base", "checkpoint": None}
        base = evaluate_protocol(
            policy,
            train_cfg,
            cfg,
            metrics=metrics,
            out=out / "base" if last else out,
            source=src,
            quiet=quiet,
            pairs=pairs,
        )
    if last is None:
        result = base
        assert result is not None
    else:
        weights, is_ema = ckpt.load_weights(last, ema=cfg.ema)
        policy.load_trainable_state_dict(weights)
        src = {"model": str(run), "checkpoint": last.name, "weights": "ema" if is_ema else "raw"}
        result = evaluate_protocol(
            policy, train_cfg, cfg, metrics=metrics, out=out, source=src, quiet=quiet, pairs=pairs
        )
        if base is not None:
            result["base"] = {k: v for k, v in base.items() if k in _SUMMARY_KEYS}
            text = json.dumps(result, indent=2)
            atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(text))
    head = (
        f"{result['protocol']}: {result['pairs']} pairs x {result['images_per_pair']} "
        f"image(s), {result['steps']} sampler steps, shift {result['shift']:.4g}"
        + (f", guidance {result['guidance']:g}" if "guidance" in result else "")
        + (f", {result['weights']} weights" if "weights" in result else "")
    )
    label = "trained" if last is not None else "base"
    table = summary_table(
        base if last is not None else None, result, label, truth=result.get("truth")
    )
    return "\n".join([head, table, _column_legend(result["columns"])])


_SUMMARY_KEYS = ("overall", "overall_std", "pairs", "images", "images_per_pair", "per_image")


def _column_legend(columns: dict[str, str]) -> str:
    """'columns: dino = reward dino, ...': which reward each column is."""
    return "columns: " + ", ".join(f"{c} = reward {r!r}" for c, r in columns.items())
