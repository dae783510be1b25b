"""The learning-rate schedule (``optim.schedule``, ``optim.warmup``,
``optim.schedule_steps``): its values against the formula of
:mod:`cgrpo.train.lr_schedule`, the rate each step trains at, exact resume, and the
constant default that never touches the optimizer."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from cgrpo.train.lr_schedule import lr_factor, scheduled
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config, straight_and_resumed


def test_warmup_and_cosine_factors() -> None:
    cos = {"schedule": "cosine", "warmup": 3, "horizon": 10}
    # warm-up: (s + 1) / (W + 1), reaching 1 at s = W
    assert [lr_factor(s, **cos) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # cosine: 0.5 (1 + cos(pi (s - W) / (N - W))), half way at s = W + (N - W) / 2 = 6.5
    assert lr_factor(6, **cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert lr_factor(8, **cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 7)))
    assert lr_factor(10, **cos) == pytest.approx(0.0, abs=1e-15)
    assert lr_factor(13, **cos) == pytest.approx(0.0, abs=1e-15)  # past the horizon: 0
    no_warmup = {"schedule": "cosine", "warmup": 0, "horizon": 4}
    assert [lr_factor(s, **no_warmup) for s in range(4)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    )
    const = {"schedule": "constant", "warmup": 2, "horizon": 10}
    assert [lr_factor(s, **const) for s in range(5)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_each_step_trains_at_its_scheduled_rate(tmp_path: Path, tiny_weights: Path) -> None:
    args = ["run.steps=4", "run.eval=false", "optim.schedule=cosine", "optim.warmup=1"]
    cfg = fast_config(tmp_path, tiny_weights, *args, "grpo.updates_per_rollout=2")
    trainer = GRPOTrainer(cfg)
    seen: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*a, **k):  # noqa: ANN002, ANN003, ANN202
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*a, **k)

    trainer.optimizer.step = recording_step
    trainer.train(quiet=True)
    # lr 1e-3, W = 1, N = run.steps = 4: 1/2, then 0.5 (1 + cos(pi (s - 1) / 3))
    want = [0.5e-3] + [0.5e-3 * (1 + math.cos(math.pi * (s - 1) / 3)) for s in (1, 2, 3)]
    assert seen == pytest.approx([w for w in want for _ in range(2)], rel=1e-12)
    assert [float(r["lr"]) for r in _rows(tmp_path)] == pytest.approx(want, rel=1e-12)


def test_resumed_run_follows_the_schedule_exactly(tmp_path: Path, tiny_weights: Path) -> None:
    args = ["optim.schedule=cosine", "optim.warmup=1", "optim.schedule_steps=4", "run.eval=false"]
    straight, resumed = straight_and_resumed(tmp_path, tiny_weights, args)
    for p, q in zip(straight.params, resumed.params, strict=True):
        assert torch.equal(p, q)
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    drop = {k for k in a[0] if k.startswith("sec_")}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]
    assert len({r["lr"] for r in a}) == 4  # it did change every step


def test_constant_rate_leaves_the_optimizer_alone(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path, tiny_weights, "run.eval=false")
    assert (cfg.optim.schedule, cfg.optim.warmup) == ("constant", 0) and not scheduled(cfg)
    trainer = GRPOTrainer(cfg)
    trainer.train(quiet=True)
    assert trainer.optimizer.param_groups[0]["lr"] == cfg.optim.lr
    assert "lr" not in _rows(tmp_path)[0]  # the default's metrics.csv keeps its columns


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.schedule=cosine", "optim.warmup=5", "run.steps=5"], "optim.warmup smaller"),
        (["optim.schedule=cosine", "optim.warmup=3", "optim.schedule_steps=2"], "step 2"),
        (["optim.warmup=-1"], r"optim\.warmup must be >= 0, got -1"),
        (["optim.schedule_steps=-2"], r"optim\.schedule_steps must be >= 0, got -2"),
        (["optim.schedule=linear"], "optim.schedule"),
    ],
)
def test_bad_schedules_are_one_line(
    tmp_path: Path, tiny_weights: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as e:
        fast_config(tmp_path, tiny_weights, *overrides)
    assert "\n" not in str(e.value)
