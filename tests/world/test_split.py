"""The subject split: the wide split's shape, and how it travels with the weights to the
run's and cgrpo eval's embedded pairs (the shipped base keeps the shipped split)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from cgrpo.world import scene
from cgrpo.world.generator import TinyKontext
from cgrpo.world.split import (
    make_split,
    read_split,
    shipped_held_out,
    shipped_split,
    split_metadata,
    wide_split,
)
from cgrpo.world.weights_file import save_generator
from tests.conftest import TINY, fast_config


def test_wide_split_holds_out_new_identities_evenly() -> None:
    split = wide_split(32)
    train, held = set(split.train), set(split.held_out)
    assert len(train) == 224 and len(held) == 32 and not train & held
    assert len(train | held) == len(scene.SHAPES) * len(scene.COLOURS) * len(scene.PATTERNS)
    assert set(Counter(s.shape for s in held).values()) == {4}
    assert set(Counter(s.colour for s in held).values()) == {4}
    assert set(Counter(s.pattern for s in held).values()) == {8}
    shipped_train, shipped_held = scene.all_subjects()
    assert set(shipped_held) <= held and not set(shipped_train) & held  # fair to both bases
    assert wide_split(32) == split and len(wide_split(64).held_out) == 64
    with pytest.raises(ValueError, match="multiple of 8"):
        wide_split(36)
    assert make_split("shipped") == shipped_split()
    assert shipped_split().train == tuple(shipped_train)


def _weights(path: Path, extra: dict | None = None) -> Path:
    save_generator(TinyKontext(TINY), path, extra)
    return path


def test_the_split_travels_in_the_weights_metadata(tmp_path: Path) -> None:
    wide = wide_split(40)
    assert read_split(_weights(tmp_path / "w.safetensors", split_metadata(wide))) == wide
    assert read_split(_weights(tmp_path / "old.safetensors")) == shipped_split()  # no split
    assert read_split(None) == shipped_split()  # the shipped base records none
    bad = _weights(tmp_path / "bad.safetensors", {**split_metadata(wide), "subjects_train": "[1"})
    with pytest.raises(ValueError, match="bad.safetensors.*subject split"):
        read_split(bad)
    both = {**split_metadata(wide), "subjects_train": '["red-solid-star"]',
            "subjects_held_out": '["red-solid-star"]'}  # fmt: skip
    with pytest.raises(ValueError, match="in both"):
        read_split(_weights(tmp_path / "both.safetensors", both))


def test_runs_and_eval_use_the_bases_held_out_subjects(tmp_path: Path, tiny_weights) -> None:
    from cgrpo.eval.config import EvalConfig
    from cgrpo.eval.protocol import protocol_pairs
    from cgrpo.run.build import build_data

    wide = wide_split(32)
    weights = _weights(tmp_path / "wide.safetensors", split_metadata(wide))
    cfg = fast_config(tmp_path / "run", weights)
    data = build_data(cfg)
    held = {s.name for s in wide.held_out}
    _, _, names = data.eval_pairs()
    assert set(names) == held and len(names) == 32  # 1 prompt per subject
    assert {s.name for s in data.train_subjects} == {s.name for s in wide.train}
    refs, _ = data.sample(64, random.Random(0))
    train_refs = {scene.reference_image(s).tobytes() for s in wide.train}
    assert all(r.permute(1, 2, 0).numpy().tobytes() in train_refs for r in refs)
    assert set(protocol_pairs(EvalConfig(), cfg).subjects) == held
    # a base without a recorded split (tiny_weights, the shipped one): today's subjects
    shipped = build_data(fast_config(tmp_path / "old", tiny_weights))
    assert (shipped.train_subjects, shipped.eval_subjects) == scene.all_subjects()


def test_eval_split_shipped_scores_any_base_on_the_shipped_pairs(tmp_path: Path, tiny_weights):
    """data.eval_split=shipped: a wide base trains on its own 224 subjects but is scored on
    exactly the shipped base's held-out pairs (same prompts, same order)."""
    import dataclasses

    from cgrpo.run.build import build_data

    wide = wide_split(32)
    weights = _weights(tmp_path / "wide.safetensors", split_metadata(wide))
    cfg = fast_config(tmp_path / "run", weights)
    cfg.data = dataclasses.replace(cfg.data, eval_split="shipped", eval_prompts_per_subject=3)
    data = build_data(cfg)
    assert set(data.train_subjects) == set(wide.train)
    old = fast_config(tmp_path / "old", tiny_weights)
    old.data = dataclasses.replace(old.data, eval_prompts_per_subject=3)
    assert data.eval_pairs()[1:] == build_data(old).eval_pairs()[1:]  # prompts, names
    assert len(data.eval_pairs()[2]) == 8 * 3
    # a split that trained on one of the shipped held-out subjects is refused, naming it
    held = scene.all_subjects()[1]
    leaky = dataclasses.replace(wide, train=(*wide.train, held[0]))
    with pytest.raises(ValueError, match=f"trained on {held[0].name}.*eval_split=base"):
        shipped_held_out(leaky)
