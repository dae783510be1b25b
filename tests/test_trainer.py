"""The trainer end to end on the embedded world, with a tiny random generator."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tests.conftest import fast_config

from cgrpo import checkpoint as ckpt
from cgrpo.cli import main
from cgrpo.sde import sigma_schedule
from cgrpo.trainer import GRPOTrainer, TrainingError, summary_table
from cgrpo.weighting import TimeAwareWeights


def _rows(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def test_short_run_end_to_end(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path / "run", tiny_weights)
    trainer = GRPOTrainer(cfg)
    before = [p.detach().clone() for p in trainer.params]
    summary = trainer.train(quiet=True)
    run = tmp_path / "run"
    # the run folder holds everything a user looks at
    for name in ("config.yaml", "metrics.csv", "eval.json", "reward_curves.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "images").iterdir()) == [
        "eval_base.png",
        "eval_trained.png",
        "step_000001.png",
        "step_000002.png",
    ]
    assert ckpt.latest_checkpoint(run / "checkpoints") is not None
    assert any((run / "tensorboard").iterdir())
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1.0, 2.0]
    for r in rows:
        assert 0 <= r["reward_identity_mean"] <= 1 and 0 <= r["reward_prompt_mean"] <= 1
        shares = r["share_synergy"] + r["share_conflict"] + r["share_joint_failure"]
        assert shares == pytest.approx(1.0)
        sde_steps = cfg.sampler.num_steps - cfg.sampler.ode_tail
        assert r["trained_steps"] == max(1, round(0.6 * sde_steps))
        assert r["sec_sample"] > 0 and r["sec_update"] > 0
    # the update changed the weights
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    assert set(summary) >= {"base", "trained"}
    assert "base" in summary_table(summary) and "trained" in summary_table(summary)


def test_first_update_has_ratio_one(tmp_path: Path, tiny_weights: Path) -> None:
    """Re-scoring a recorded transition with unchanged weights gives ratio exactly 1."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "grpo.updates_per_rollout=1")
    trainer = GRPOTrainer(cfg)
    roll, _, _ = trainer.rollout()
    a = torch.randn(roll.latents.shape[1])
    stats = trainer.update(roll, a, a)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-10)
    assert stats["clip_fraction"] == 0.0


def test_second_chunk_sees_moved_policy(tmp_path: Path, tiny_weights: Path) -> None:
    """With two optimizer steps per rollout, the second chunk's ratio moves away from 1."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "grpo.updates_per_rollout=2", "optim.lr=1e-2")
    trainer = GRPOTrainer(cfg)
    roll, _, _ = trainer.rollout()
    a = torch.randn(roll.latents.shape[1])
    stats = trainer.update(roll, a, a)
    assert stats["approx_kl"] > 0
    assert stats["ratio_mean"] != 1.0


@pytest.mark.parametrize("ode_tail", [0, 2])
def test_weights_follow_true_step_index(tmp_path: Path, tiny_weights: Path, ode_tail: int) -> None:
    """Every re-scored transition is weighted by TDW at its own denoising index, and the
    deterministic tail steps are never trained."""
    cfg = fast_config(
        tmp_path / "run", tiny_weights, "sampler.num_steps=8", f"sampler.ode_tail={ode_tail}"
    )
    trainer = GRPOTrainer(cfg)
    sigmas = sigma_schedule(8, cfg.sampler.shift)
    weighted: list[int] = []
    rescored: list[float] = []
    tdw = TimeAwareWeights()

    class Recorder:
        def weights(self, t: int, n: int) -> tuple[float, float]:
            weighted.append(t)
            return tdw.weights(t, n)

    trainer.weighting = Recorder()
    roll, refs, prompts = trainer.rollout()
    velocity = trainer.policy.velocity

    def spy(x, sigma, cond):
        rescored.append(float(sigma[0]))
        return velocity(x, sigma, cond)

    trainer.policy.velocity = spy  # type: ignore[method-assign]
    a = torch.randn(roll.latents.shape[1])
    trainer.update(roll, a, -a)
    assert len(weighted) == round(0.6 * (8 - ode_tail))
    assert len(set(weighted)) == len(weighted)
    assert max(weighted) < 8 - ode_tail
    # the transition re-scored after weight w(t) starts at sigma[t]: same t, not a loop counter
    assert rescored == pytest.approx([float(sigmas[t]) for t in weighted])
    assert weighted != sorted(weighted) or weighted != list(range(len(weighted)))


def test_resume_equals_uninterrupted(tmp_path: Path, tiny_weights: Path) -> None:
    straight = GRPOTrainer(fast_config(tmp_path / "a", tiny_weights, "run.steps=4"))
    straight.train(quiet=True)

    first = GRPOTrainer(fast_config(tmp_path / "b", tiny_weights, "run.steps=2"))
    first.train(quiet=True)
    resumed = GRPOTrainer(fast_config(tmp_path / "b", tiny_weights, "run.steps=4"))
    resumed.train(resume=True, quiet=True)

    for p, q in zip(straight.params, resumed.params, strict=True):
        assert torch.equal(p, q)
    ra, rb = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    keys = ["step", "reward_identity_mean", "reward_prompt_mean", "loss", "grad_norm"]
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]
    ea = json.loads((tmp_path / "a" / "eval.json").read_text())
    eb = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert ea["trained"] == eb["trained"]


def test_killed_checkpoint_write_keeps_previous(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.steps=3")
    trainer = GRPOTrainer(cfg)
    real = ckpt.save_state

    def dying_save_state(path, state):
        if state["step"] == 3:
            Path(path).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt("killed while writing")
        return real(path, state)

    monkeypatch.setattr(ckpt, "save_state", dying_save_state)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(quiet=True)
    monkeypatch.setattr(ckpt, "save_state", real)
    last = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None
    _, state, _ = ckpt.load_checkpoint(last)
    assert state["step"] == 2
    # and the run continues from there
    again = GRPOTrainer(cfg)
    again.train(resume=True, quiet=True)
    assert again.step == 3


def test_nan_rewards_are_skipped_then_stop(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.max_skips=3", "run.eval=false")
    trainer = GRPOTrainer(cfg)

    class NaNReward:
        name = "nan"

        def __call__(self, images, prompts, references):
            return torch.full((images.shape[0],), math.nan)

    trainer.rewards = (trainer.rewards[0], NaNReward())
    before = [p.detach().clone() for p in trainer.params]
    with pytest.raises(TrainingError, match="3 consecutive steps had non-finite"):
        trainer.train(quiet=True)
    # the optimizer never saw them
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    rows = _rows(tmp_path / "run")
    assert [r["skipped"] for r in rows] == [1.0, 1.0, 1.0]
    assert all(r["nonfinite_rewards"] == 8 for r in rows)


def test_cli_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "grpo.grup_size=3"]) == 2
    err = capsys.readouterr().err
    assert "grpo.grup_size" in err and "group_size" in err
    assert main(["train", f"model.weights={tmp_path / 'missing.safetensors'}"]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and "cgrpo pretrain" in err
    assert main(["train", "grpo.group_size=1"]) == 2
    assert "group_size must be >= 2" in capsys.readouterr().err


def test_cli_sample_writes_grid(tmp_path: Path, tiny_weights: Path) -> None:
    out = tmp_path / "s.png"
    args = ["sample", "--weights", str(tiny_weights), "--reference", "red-hstripes-circle"]
    args += ["--prompt", "a circle on a sky background", "--num", "2", "--steps", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    assert main([*args[:-6], "--prompt", "a dog", "--out", str(out)]) == 2


def test_evaluation_with_several_noises_reports_paired_error(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """Base and final evaluation draw each held-out pair from 2 noises; the table gives the
    image-by-image change's standard error, computed from the same images."""
    import numpy as np

    from cgrpo.compare import load_run
    from cgrpo.trainer import paired_change

    cfg = fast_config(tmp_path / "run", tiny_weights, "data.eval_noises=2", "run.eval_every=1")
    summary = GRPOTrainer(cfg).train(quiet=True)
    base, trained = summary["base"], summary["trained"]
    assert (base["n"], base["images"]) == (8, 16)
    assert len(trained["per_image"]["identity"]) == 16
    assert trained["identity"] == pytest.approx(np.mean(trained["per_image"]["identity"]), abs=1e-5)
    d = np.array(trained["per_image"]["prompt"]) - np.array(base["per_image"]["prompt"])
    mean, se = paired_change(base, trained, "prompt")
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / 4)
    table = summary_table(summary)
    assert "8 pairs x 2 noises" in table and "paired SE" in table
    # the mid-run evaluations use one noise: step 2's equals the final one's first half
    rows = _rows(tmp_path / "run")
    first = np.mean(trained["per_image"]["identity"][:8])
    assert rows[-1]["eval_identity"] == pytest.approx(first, abs=1e-5)
    # eval.json keeps the per-image rewards, so compare shows the paired error too
    assert load_run(tmp_path / "run").paired["prompt"] == pytest.approx((mean, se))
    with pytest.raises(ValueError, match="same images"):
        paired_change(base, {"per_image": {"prompt": [0.0] * 8}}, "prompt")
