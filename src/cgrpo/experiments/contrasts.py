"""Paired contrasts beyond the claims: what each part of Customized-GRPO adds (one arm minus
another of the same sweep, the paper's ablation), and each arm minus the same arm and seed
of another sweep (``--against``); both image by image, per seed and pooled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cgrpo.experiments.cells import pooled_cell, seed_cells
from cgrpo.experiments.degradation import LABELS, REWARDS
from cgrpo.experiments.finals import Finals, differences, per_image
from cgrpo.experiments.run_folders import finished_steps, runs_at
from cgrpo.experiments.statistics import pooled

__all__ = [
    "COMPONENTS",
    "against_finals",
    "against_section",
    "check_against",
    "components_section",
]

#: the paper's ablation as paired contrasts: (arm, minus arm, what the difference isolates)
COMPONENTS = [
    ("sars", "naive_1_1", "SARS, on static 1:1 weights"),
    ("tdw", "naive_1_1", "TDW, with linear shaping"),
    ("tdw", "naive_0.5_0.5", "TDW's phases alone (both pairs of weights sum to 1)"),
    ("sars_tdw", "tdw", "SARS, on TDW weights"),
    ("sars_tdw", "sars", "TDW, with SARS shaping"),
    (
        "naive_0.5_0.5",
        "naive_1_1",
        "the advantages' scale x0.5: nothing under Adam at KL 0 (run-to-run drift); "
        "with KL, the KL term's weight x2",
    ),
]


def _cells(a: dict, b: dict, per_pair: int) -> tuple[list[str], list[int]]:
    """The pooled and per-seed cells of ``a - b`` (identity, prompt; then per seed), and
    the seeds both hold (none: no cells)."""
    diff = differences(a, b, per_pair)
    if not diff["identity"]:
        return [], []
    pool = [pooled_cell(pooled(diff[r])) for r in REWARDS]
    return pool + [seed_cells(diff[r]) for r in REWARDS], list(diff["identity"])


def components_section(finals: Finals, per_pair: int) -> str:
    """What each part of Customized-GRPO adds, as paired contrasts between arms (the
    paper's ablation): for each row of :data:`COMPONENTS` with both arms finished, ``a - b``
    image by image on the seeds both ran, per seed (* at >= 2 SE over the pairs) and pooled
    (:func:`~cgrpo.experiments.statistics.pooled`, * at the t quantile). The 0.5:0.5 - 1:1
    row halves the advantages: at ``grpo.kl_coef = 0`` Adam makes the two the same algorithm,
    so its size is the drift between runs alone (the yardstick); with a KL term, which does
    not scale with the advantages, it doubles the KL's relative weight, as TDW's weights
    (summing to 1 instead of 2) do. Empty when no row has both arms."""
    rows = []
    for a, b, what in COMPONENTS:
        if a not in finals or b not in finals:
            continue
        cells, seeds = _cells(finals[a], finals[b], per_pair)
        rows.append(
            f"| {LABELS[a]} minus {LABELS[b]} | {what} | {len(seeds)} | " + " | ".join(cells) + " |"
        )
    if not rows:
        return ""
    return "\n".join(
        [
            "### What each part adds (paired contrasts between arms)",
            "",
            "| contrast | isolates | seeds | Δ identity pooled | Δ prompt pooled | "
            "per seed identity | per seed prompt |",
            "|---|---|---:|---:|---:|---|---|",
            *rows,
            "",
        ]
    )


def against_section(finals: Finals, other: Finals, per_pair: int, *, name: str) -> str:
    """Each arm's runs minus the same arm and seed of another sweep (``name``, its finals
    ``other``): the paired difference image by image (same pairs, same noise), per seed with
    its SE over the pairs (* at >= 2 SE) and pooled over the seeds both hold. A section that
    says so when no arm and seed is in both."""
    out = [
        f"### Paired against `{name}` (this sweep's run minus the same arm and seed there)",
        "",
        "| arm | seeds both ran | Δ identity pooled | Δ prompt pooled | per seed identity | "
        "per seed prompt |",
        "|---|---:|---:|---:|---|---|",
    ]
    rows = []
    for a in finals:
        cells, seeds = _cells(finals[a], other.get(a, {}), per_pair)
        if seeds:
            rows.append(
                f"| {LABELS[a]} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |"
            )
    if not rows:  # said in the report, not raised: the rest of the report still stands
        print(f"--against {name}: no arm and seed finished at this --steps in both", flush=True)
        return f"{out[0]}\n\nNo arm and seed finished at this `--steps` in both sweeps.\n"
    return "\n".join(out + rows + [""])


def against_finals(other: Path, arms: list[str], steps: int) -> Finals:
    """The other sweep's final per-image rewards of ``arms``, its runs finished at ``steps``."""
    finished = finished_steps(other)
    return {a: {k: per_image(d) for k, d in runs_at(finished, a, steps).items()} for a in arms}


#: per-image reward difference up to which two evaluations of the base count as the same
#: images: the same model on the same pairs and noise, evaluated on another machine or
#: thread count, differs by float rounding (measured: 18 of 512 identity rewards by at most
#: 1.1e-4, 5 of 512 prompt rewards by at most 2.4e-5); other pairs or noise move most
#: images by 1e-2 or more
BASE_ATOL = 1e-3


def _same_images(theirs: list | None, ours: list) -> bool:
    """|theirs - ours| <= :data:`BASE_ATOL` for every image, and as many images."""
    if theirs is None or len(theirs) != len(ours):
        return False
    return bool(np.allclose(theirs, ours, rtol=0.0, atol=BASE_ATOL))


def check_against(other: Path, base: dict) -> None:
    """Refuses (``SystemExit``, before any training) a ``--against`` sweep whose base
    evaluation is not this one's (``base``, its summary): other held-out pairs or noise
    cannot be paired image by image. Rounding jitter within :data:`BASE_ATOL` passes."""
    path = other / "base_eval" / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"--against {other}: no {path}; point it at another sweep's --out")
    theirs = json.loads(path.read_text())["per_image"]
    if any(not _same_images(theirs.get(r), base["per_image"][r]) for r in REWARDS):
        raise SystemExit(
            f"--against {other}: its base evaluation is not this sweep's (other held-out "
            "pairs, noise or --eval-images), so its runs cannot be paired image by image"
        )
