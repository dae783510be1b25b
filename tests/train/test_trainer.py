"""The trainer end to end on the embedded world, with a tiny random generator."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from cgrpo.cli import main
from cgrpo.eval.summary import paired_difference, summary_table
from cgrpo.io import checkpoint as ckpt
from cgrpo.io.atomic import CheckpointError
from cgrpo.method.weighting import TimeAwareWeights
from cgrpo.rewards.set import RewardSet
from cgrpo.sampling.sde import sigma_schedule
from cgrpo.train.errors import TrainingError
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config


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
        assert 0 <= r["reward/identity/mean"] <= 1 and 0 <= r["reward/prompt/mean"] <= 1
        shares = r["share/synergy"] + r["share/conflict"] + r["share/joint_failure"]
        assert shares == pytest.approx(1.0)
        s = cfg.sampler  # the default schedule's SDE steps (the branch: its k)
        sde_steps = sum(
            s.schedule.sde_mask(s.num_steps, s.ode_tail, 0, generator=torch.Generator())
        )
        assert r["trained_steps"] == max(1, round(cfg.grpo.timestep_fraction * sde_steps))
        assert r["sec_sample"] > 0 and r["sec_update"] > 0
    # the update changed the weights
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    assert set(summary) >= {"base", "trained"}
    table = summary_table(summary["base"], summary["trained"])
    assert "base" in table and "trained" in table


def test_first_update_has_ratio_one(tmp_path: Path, tiny_weights: Path) -> None:
    """Re-scoring a recorded transition with unchanged weights gives ratio exactly 1."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "grpo.updates_per_rollout=1")
    trainer = GRPOTrainer(cfg)
    roll, _, _ = trainer.rollout()
    a = torch.randn(roll.latents.shape[1])
    stats = trainer.update(roll, {"identity": a, "prompt": a})
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-10)
    assert stats["clip_fraction"] == 0.0


def test_second_chunk_sees_moved_policy(tmp_path: Path, tiny_weights: Path) -> None:
    """With two optimizer steps per rollout, the second chunk's ratio moves away from 1."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "grpo.updates_per_rollout=2", "optim.lr=1e-2")
    trainer = GRPOTrainer(cfg)
    roll, _, _ = trainer.rollout()
    a = torch.randn(roll.latents.shape[1])
    stats = trainer.update(roll, {"identity": a, "prompt": a})
    assert stats["approx_kl"] > 0
    assert stats["ratio_mean"] != 1.0


@pytest.mark.parametrize("ode_tail", [0, 2])
def test_weights_follow_true_step_index(tmp_path: Path, tiny_weights: Path, ode_tail: int) -> None:
    """Every re-scored transition is weighted by TDW at its own denoising index, and the
    deterministic tail steps are never trained."""
    cfg = fast_config(
        tmp_path / "run", tiny_weights, "sampler.num_steps=8", f"sampler.ode_tail={ode_tail}",
        "sampler.schedule.kind=full", "grpo.timestep_fraction=0.6",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    sigmas = sigma_schedule(8, cfg.sampler.shift)
    weighted: list[int] = []
    rescored: list[float] = []
    tdw = TimeAwareWeights()

    class Recorder:
        def step_weights(self, t: int, n: int, base, *, pair) -> dict[str, float]:
            weighted.append(t)
            return tdw.step_weights(t, n, base, pair=pair)

    trainer.weighting = Recorder()
    roll, refs, prompts = trainer.rollout()
    velocity = trainer.policy.velocity

    def spy(x, sigma, cond):
        rescored.append(float(sigma[0]))
        return velocity(x, sigma, cond)

    trainer.policy.velocity = spy  # type: ignore[method-assign]
    a = torch.randn(roll.latents.shape[1])
    trainer.update(roll, {"identity": a, "prompt": -a})
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
    keys = ["step", "reward/identity/mean", "reward/prompt/mean", "loss", "grad_norm"]
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


class NaNReward:
    """A reward that is NaN for the first ``bad`` calls (every call when None)."""

    name = "nan"

    def __init__(self, bad: int | None = None) -> None:
        self.bad, self.calls = bad, 0

    def __call__(self, images, prompts, references):
        self.calls += 1
        if self.bad is None or self.calls <= self.bad:
            return torch.full((images.shape[0],), math.nan)
        return images.mean(dim=(1, 2, 3))


def test_nan_rewards_are_skipped_then_stop(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.max_skips=3", "run.eval=false")
    trainer = GRPOTrainer(cfg)
    models = {**trainer.rewards.models, "prompt": NaNReward()}
    trainer.rewards = RewardSet(models, trainer.rewards.weights)
    before = [p.detach().clone() for p in trainer.params]
    with pytest.raises(TrainingError, match="3 consecutive steps had non-finite"):
        trainer.train(quiet=True)
    # the optimizer never saw them
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    # one row, for the step that never happened, with the skip count
    rows = _rows(tmp_path / "run")
    assert [(r["step"], r["skips"], r["total_skips"]) for r in rows] == [(1.0, 3.0, 3.0)]
    assert rows[0]["nonfinite_rewards"] == 8


def test_skipped_step_and_its_retry_log_one_row(tmp_path: Path, tiny_weights: Path) -> None:
    """Defect: a skipped step and its retry logged the same step number."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.eval=false", "run.steps=2")
    trainer = GRPOTrainer(cfg)
    models = {**trainer.rewards.models, "prompt": NaNReward(bad=1)}
    trainer.rewards = RewardSet(models, trainer.rewards.weights)
    trainer.train(quiet=True)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1.0, 2.0]
    assert [r["skips"] for r in rows] == [1.0, 0.0] and rows[-1]["total_skips"] == 1.0


def test_mid_run_evaluation_is_logged_off_log_steps(tmp_path: Path, tiny_weights: Path) -> None:
    """Defect: mid-run evaluation metrics were dropped unless the step was a log step."""
    cfg = fast_config(
        tmp_path / "run", tiny_weights, "run.steps=3", "run.log_every=10", "run.eval_every=1"
    )
    GRPOTrainer(cfg).train(quiet=True)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0]
    assert all("eval/identity" in r and "eval/prompt" in r for r in rows)


def test_nonfinite_later_chunk_leaves_weights_optimizer_and_ema(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """Defect: with updates_per_rollout > 1, a later chunk's non-finite loss returned
    "skipped" after earlier chunks had stepped the optimizer and the EMA."""
    cfg = fast_config(
        tmp_path / "run", tiny_weights, "grpo.updates_per_rollout=2", "optim.ema_decay=0.5"
    )
    trainer = GRPOTrainer(cfg)
    roll, _, _ = trainer.rollout()
    a = torch.randn(roll.latents.shape[1])
    trainer.update(roll, {"identity": a, "prompt": a})  # moments and EMA exist now
    weights = [p.detach().clone() for p in trainer.params]
    moments = {
        i: {k: v.clone() for k, v in s.items()}
        for i, s in trainer.optimizer.state_dict()["state"].items()
    }
    ema = [e.clone() for e in trainer.state.ema.shadow]
    real = trainer.objective
    calls = {"n": 0}
    per_chunk = max(1, round(0.6 * (cfg.sampler.num_steps - cfg.sampler.ode_tail)))  # passes

    class NaNInSecondChunk:
        def __getattr__(self, name):
            return getattr(real, name)

        def loss(self, *args, **kwargs):
            calls["n"] += 1
            loss, stats = real.loss(*args, **kwargs)
            return (loss * math.nan, stats) if calls["n"] > per_chunk else (loss, stats)

    trainer.objective = NaNInSecondChunk()
    assert trainer.update(roll, {"identity": a, "prompt": a}) == {"nonfinite_loss": 1.0}
    assert calls["n"] == 2 * per_chunk  # the first chunk did step
    assert all(torch.equal(p, w) for p, w in zip(trainer.params, weights, strict=True))
    after = trainer.optimizer.state_dict()["state"]
    for i, s in moments.items():
        for k, v in s.items():
            assert torch.equal(after[i][k], v), (i, k)
    assert all(torch.equal(e, f) for e, f in zip(trainer.state.ema.shadow, ema, strict=True))


def test_trainer_leaves_the_callers_config(tmp_path: Path, tiny_weights: Path) -> None:
    """Defect: the trainer wrote the per-process device into the user's config."""
    from cgrpo.config.core import config_to_dict

    cfg = fast_config(tmp_path / "run", tiny_weights, "run.eval=false", "run.steps=1")
    before = config_to_dict(cfg)
    trainer = GRPOTrainer(cfg)
    trainer.cfg.model.device = "meta"  # the trainer's copy is its own
    trainer.train(quiet=True)
    assert config_to_dict(cfg) == before


def test_rollout_carries_its_sde_steps(tmp_path: Path, tiny_weights: Path) -> None:
    """Defect: num_sde_steps was inferred from finite log-probs, so a NaN shrank it."""
    cfg = fast_config(
        tmp_path / "run", tiny_weights, "sampler.num_steps=4", "sampler.ode_tail=1",
        "sampler.schedule.kind=full",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    roll, _, _ = trainer.rollout()
    assert roll.num_sde_steps == 3
    roll.log_probs[1, 0] = math.nan  # a NaN in an SDE step's log-prob
    assert roll.num_sde_steps == 3


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

    from cgrpo.eval.compare import load_run

    cfg = fast_config(tmp_path / "run", tiny_weights, "data.eval_noises=2", "run.eval_every=1")
    summary = GRPOTrainer(cfg).train(quiet=True)
    base, trained = summary["base"], summary["trained"]
    assert (base["pairs"], base["images"]) == (8, 16)
    assert len(trained["per_image"]["identity"]) == 16
    ident = trained["per_image"]["identity"]
    assert trained["overall"]["identity"] == pytest.approx(np.mean(ident), abs=1e-5)
    d = np.array(trained["per_image"]["prompt"]) - np.array(base["per_image"]["prompt"])
    mean, se = paired_difference(trained["per_image"]["prompt"], base["per_image"]["prompt"], 2)
    per_pair = d.reshape(8, 2).mean(1)  # the SE is over the 8 pairs, not the 16 images
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(per_pair.std(ddof=1) / 8**0.5)
    table = summary_table(base, trained)
    assert "8 pairs x 2 noises" in table and "paired SE" in table
    # the ground truth of each pair is scored once, repeated for its draws
    truth = summary["truth"]
    assert len(truth["per_image"]["identity"]) == 16
    assert truth["per_image"]["identity"][::2] == truth["per_image"]["identity"][1::2]
    assert "gap closed" in summary_table(base, trained, truth=truth)
    # the mid-run evaluations use one noise: step 2's is the final one's first draws
    rows = _rows(tmp_path / "run")
    first = np.mean(ident[::2])
    assert rows[-1]["eval/identity"] == pytest.approx(first, abs=1e-6)
    # eval.json keeps the per-image rewards, so compare shows the paired error too
    assert load_run(tmp_path / "run").paired["prompt"] == pytest.approx((mean, se))
    with pytest.raises(ValueError, match="same images"):
        paired_difference([0.0] * 8, base["per_image"]["prompt"])


def test_sample_from_a_run_uses_its_sampler_and_ema(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defects: cgrpo sample hard-coded shift 3 and ignored the run's sampler; checkpoints
    held only the raw weights while evaluation used the EMA."""
    import cgrpo.eval.sample as sample_mod

    run = tmp_path / "run"
    cfg = fast_config(
        run, tiny_weights, "optim.ema_decay=0.5", "sampler.shift=1.5", "run.eval_steps=2",
        "run.eval=false",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    trainer.train(quiet=True)
    with trainer.ema_swapped():
        ema = {k: v.clone() for k, v in trainer.policy.trainable_state_dict().items()}
    raw = trainer.policy.trainable_state_dict()
    policy, _ = sample_mod.policy_from(run, None)
    got = policy.trainable_state_dict()
    assert all(torch.equal(got[k], ema[k]) for k in ema)
    assert any(not torch.equal(got[k], raw[k]) for k in raw)
    raw_policy, _ = sample_mod.policy_from(run, None, ema=False)
    assert all(torch.equal(raw_policy.trainable_state_dict()[k], raw[k]) for k in raw)
    calls = []
    import cgrpo.run.build as build_mod

    real = build_mod.sigma_schedule
    monkeypatch.setattr(
        build_mod, "sigma_schedule", lambda n, s: (calls.append((n, s)), real(n, s))[1]
    )
    out = tmp_path / "s.png"
    args = ["sample", "--run", str(run), "--reference", "red-hstripes-circle", "--num", "1"]
    assert main([*args, "--prompt", "a circle on a sky background", "--out", str(out)]) == 0
    assert calls == [(2, 1.5)] and out.is_file()


def test_three_named_rewards_train_log_and_compare(tmp_path: Path, tiny_weights: Path) -> None:
    """A third reward (colour) trains end to end: logged by name, in eval.json, tabled by
    cgrpo compare; TDW sets only the (identity, prompt) pair's weights."""
    from cgrpo.eval.compare import compare_command

    run = tmp_path / "run"
    cfg = fast_config(run, tiny_weights, "rewards.colour={kind: colour, weight: 0.2}")
    trainer = GRPOTrainer(cfg)
    assert trainer.rewards.names == ["identity", "prompt", "colour"]
    summary = trainer.train(quiet=True)
    rows = _rows(run)
    assert all(f"reward/{k}/mean" in r for r in rows for k in ("identity", "prompt", "colour"))
    assert set(summary["trained"]["overall"]) == {"identity", "prompt", "colour"}
    table = compare_command([run], tmp_path / "cmp")
    assert all(k in table for k in ("identity", "prompt", "colour"))
    adv = {k: torch.randn(8) for k in ("identity", "prompt", "colour")}
    shaped = trainer.shaped_advantages(adv, [0, 2], 3)
    tdw = cfg.method.weighting
    for t in (0, 2):
        w_id, w_p = tdw.weights(t, 3)
        lin = w_id * adv["identity"] + w_p * adv["prompt"] + 0.2 * adv["colour"]
        bonus = shaped[t] - lin
        assert float(bonus.abs().max()) <= cfg.method.shaping.gamma + 1e-6
        torch.testing.assert_close(bonus, _sars_bonus(adv["identity"], adv["prompt"]))


def _sars_bonus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    s = torch.where((a > 0) | (b > 0), 1.0, -1.0)
    return 0.4 * s * torch.tanh(a * b)


def test_strategy_constants_and_new_kinds_come_from_config(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """Every TDW / SARS constant is a config key, and a kind registered by name is usable
    without touching the trainer."""
    from dataclasses import dataclass

    from cgrpo.config.core import option
    from cgrpo.method.shaping import SHAPINGS, Shaping

    cfg = fast_config(
        tmp_path / "a", tiny_weights, "method.weighting.early_w_prompt=0.9",
        "method.weighting.center=2", "method.shaping.gamma=0.1",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    assert trainer.weighting.weights(0, 25) == pytest.approx((0.1, 0.9))
    assert trainer.weighting.center == 2 and trainer.shaping.gamma == 0.1

    @SHAPINGS.register("identity_only")
    @dataclass(frozen=True)
    class IdentityOnly(Shaping):
        scale: float = option(1.0, "scale of the identity advantage")

        def __call__(self, advantages, weights, pair):
            return self.scale * advantages[pair[0]]

    try:
        cfg = fast_config(tmp_path / "b", tiny_weights, "method.shaping.kind=identity_only",
                          "method.shaping.scale=2", "run.eval=false")  # fmt: skip
        trainer = GRPOTrainer(cfg)
        adv = {"identity": torch.ones(4), "prompt": -torch.ones(4)}
        assert torch.equal(trainer.shaped_advantages(adv, [0], 3)[0], 2 * torch.ones(4))
        trainer.train(quiet=True)
        assert trainer.step == cfg.run.steps
    finally:
        del SHAPINGS.kinds["identity_only"]


def test_optimizer_state_is_keyed_by_parameter_name(tmp_path: Path, tiny_weights: Path) -> None:
    """torch.distributed.checkpoint's full optimizer state: keyed by each parameter's name
    in the policy's module, and loaded back by name."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.eval=false", "run.steps=1")
    trainer = GRPOTrainer(cfg)
    fresh = trainer.state.state_dict(trainer.dist)["optimizer"]
    assert fresh["state"] == {}  # not stepped yet: saving must not create state
    trainer.train(quiet=True)
    optim = trainer.state.state_dict(trainer.dist)["optimizer"]
    names = [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad]
    assert sorted(optim["state"]) == sorted(names)
    moments = {n: optim["state"][n]["exp_avg"].clone() for n in names}
    other = GRPOTrainer(cfg)
    other.load(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    again = other.state.state_dict(other.dist)["optimizer"]
    assert all(torch.equal(again["state"][n]["exp_avg"], moments[n]) for n in names)
    with pytest.raises(ValueError, match="does not train"):
        other.state._load_optimizer_state({**optim, "state": {"nope": {}}}, other.dist)


def test_one_default_of_held_out_prompts_per_subject() -> None:
    """Defect: the defaults disagreed (8 in data.py, 16 in DataConfig, 32 in the YAML)."""
    from cgrpo.config.core import load_config
    from cgrpo.data.base import EmbeddedData
    from cgrpo.eval.config import EvalConfig
    from cgrpo.eval.protocol import protocol_pairs
    from cgrpo.run.config import EMBEDDED_CONFIG, DataConfig, TrainConfig

    shipped = load_config(TrainConfig, EMBEDDED_CONFIG, [])
    n = DataConfig().eval_prompts_per_subject
    assert n == EmbeddedData().eval_prompts_per_subject == shipped.data.eval_prompts_per_subject
    pairs = protocol_pairs(EvalConfig(), shipped)  # cgrpo eval's 0: the run's
    assert len(pairs) == 8 * n


def test_reward_entries_merge_across_layers() -> None:
    """A reward whose kind changes keeps no option of the old kind; a bare kind followed
    by a dotted key keeps the kind; unknown static weight names fail at load time."""
    from cgrpo.config.core import load_config
    from cgrpo.config.errors import ConfigError
    from cgrpo.run.config import TrainConfig

    root = Path(__file__).resolve().parents[2] / "configs" / "uno_syncd.yaml"
    cfg = load_config(TrainConfig, root, ["rewards.identity.kind=colour"])
    assert cfg.rewards["identity"] == {"kind": "colour", "weight": 1.0}
    cfg = load_config(TrainConfig, root, ["rewards.identity.weight=2"])
    assert cfg.rewards["identity"]["path"] == "weights/dinov2-base"  # same kind: merged
    cfg = load_config(TrainConfig, None, ["rewards.identity=colour", "rewards.identity.weight=0.5"])
    assert cfg.rewards["identity"] == {"kind": "colour", "weight": 0.5}
    with pytest.raises(ConfigError, match="idenity"):
        load_config(TrainConfig, None, ["method.weighting=static",
                                        "method.weighting.weights={idenity: 2}"])  # fmt: skip


def test_like_puts_a_restored_tensor_where_its_parameter_lives() -> None:
    """Resuming (EMA, moments) without FSDP: on the parameter's device and in its dtype."""
    from cgrpo.run.distributed import Dist

    own = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    out = Dist.like(torch.ones(3), own)
    assert out.dtype == torch.bfloat16 and out.device == own.device


def test_time_budget_stops_the_run_checkpointed_and_resumes(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """run.time_budget: the step that spends the budget is the last, and is checkpointed;
    the time spent is kept across resume, so a resumed run does not start its budget anew."""
    from cgrpo.io import checkpoint as ckpt

    args = ["run.steps=5", "run.checkpoint_every=0", "run.eval=false", "run.time_budget=1e-9"]
    trainer = GRPOTrainer(fast_config(tmp_path / "run", tiny_weights, *args))
    trainer.train(quiet=True)
    assert trainer.step == 1 and trainer.state.train_seconds > 0
    _, state, _ = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints")
    assert state["step"] == 1 and state["train_seconds"] == trainer.state.train_seconds
    again = GRPOTrainer(fast_config(tmp_path / "run", tiny_weights, *args))
    again.train(resume=True, quiet=True)
    assert again.step == 1  # the budget was already spent
    more = GRPOTrainer(fast_config(tmp_path / "run", tiny_weights, *args[:-1], "run.time_budget=0"))
    more.train(resume=True, quiet=True)
    assert more.step == 5


def test_embedded_lora_trains_only_its_adapter_and_resumes(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """model.lora_rank: the base weights stay, only LoRA weights move, the starting
    velocity is the base model's, a resumed run equals an uninterrupted one, and
    the run's checkpoint loads into a fresh LoRA policy (as ``cgrpo eval`` loads it)."""
    from cgrpo.run.build import build_policy
    from tests.conftest import straight_and_resumed

    args = ["model.lora_rank=4", "model.lora_alpha=8", "optim.lr=1e-2"]
    straight, resumed = straight_and_resumed(tmp_path, tiny_weights, args)
    for p, q in zip(straight.params, resumed.params, strict=True):
        assert torch.equal(p, q)
    names = [n for n, p in straight.policy.model.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n for n in names)
    assert len(straight.params) == len(names)
    base = build_policy(fast_config(tmp_path / "c", tiny_weights), keep_reference=False)
    start = build_policy(fast_config(tmp_path / "c", tiny_weights, *args[:2]))
    trained = dict(straight.policy.model.named_parameters())
    for n, p in base.model.named_parameters():  # the frozen weights never moved
        key = n.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(trained.get(n, trained.get(key)), p), n
    assert any(not torch.equal(trained[n], dict(start.model.named_parameters())[n])
               for n in names)  # fmt: skip
    last = ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints")
    tensors, _ = ckpt.load_weights(last, ema=False)
    start.load_trainable_state_dict(tensors)  # what cgrpo eval / sample do with the run
    for n, p in start.model.named_parameters():
        assert torch.equal(p, trained[n])
    with pytest.raises(ValueError, match="set flux.lora_rank instead"):
        fast_config(tmp_path / "d", tiny_weights, "model.lora_rank=4", "model.kind=flux")


@pytest.mark.parametrize("old", ["optimizer state by index", "no train_seconds"])
def test_a_checkpoint_of_an_older_cgrpo_is_one_clear_error(
    tmp_path: Path, tiny_weights: Path, old: str
) -> None:
    """Checkpoints in an older format (the optimizer state keyed by index, no
    ``train_seconds``) are refused with one line naming the checkpoint, before anything
    of the trainer is changed."""
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.eval=false", "run.steps=1")
    trainer = GRPOTrainer(cfg)
    trainer.train(quiet=True)
    last = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    _, state, _ = ckpt.load_checkpoint(last)
    if old == "no train_seconds":
        del state["train_seconds"]
    else:
        state["optimizer"] = trainer.optimizer.state_dict()  # keyed 0, 1, ...
        assert all(isinstance(k, int) for k in state["optimizer"]["state"])
    other = GRPOTrainer(cfg)
    before = other.state.state_dict(other.dist)
    with pytest.raises(CheckpointError, match="written by an older cgrpo") as info:
        other.state.load_state_dict(state, other.dist, source=last)
    assert str(last) in str(info.value) and "\n" not in str(info.value)
    assert other.step == before["step"] == 0
    assert other.state.state_dict(other.dist)["optimizer"]["state"] == {}


class _Unshardable:
    """A policy without ``shard_modules`` (the optional :class:`Shardable` capability)."""

    def __init__(self, policy) -> None:
        self._policy = policy

    def __getattr__(self, name: str):
        if name == "shard_modules":
            raise AttributeError(name)
        return getattr(self._policy, name)


def test_a_policy_without_shard_modules_keeps_its_optimizer_state_by_index(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """Whether the optimizer state is keyed by name is the policy's Shardable capability
    (an isinstance check): a policy without a root module keeps it by index, and such a
    checkpoint resumes (it is not an older cgrpo's)."""
    from cgrpo.policies.base import Shardable

    cfg = fast_config(tmp_path / "run", tiny_weights, "run.eval=false", "run.steps=1")
    named = GRPOTrainer(cfg)
    assert isinstance(named.policy, Shardable)
    assert named.state.module is named.policy.shard_modules()[0] and named.state.names
    plain = _Unshardable(named.policy)
    assert not isinstance(plain, Shardable)
    trainer = GRPOTrainer(cfg, policy=plain)
    assert trainer.state.module is None and trainer.state.names is None
    trainer.train(quiet=True)
    last = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    _, state, _ = ckpt.load_checkpoint(last)
    assert sorted(state["optimizer"]["state"]) == list(range(len(trainer.params)))
    again = GRPOTrainer(cfg, policy=_Unshardable(GRPOTrainer(cfg).policy))
    again.load(last)
    assert again.step == 1
    moments = again.optimizer.state_dict()["state"]
    assert all(
        torch.equal(moments[i]["exp_avg"], s["exp_avg"])
        for i, s in state["optimizer"]["state"].items()
    )
