"""``cgrpo eval``'s sampling keys (``guidance``, ``shift``, ``steps``): what the transformer
of a tiny random FLUX run sees, and bad values refused in one line before anything loads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from cgrpo.cli import main
from cgrpo.eval import protocol
from cgrpo.sampling.sde import sigma_schedule

DREAMBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "dreambench"
METRICS = "metrics={identity_offline: {kind: effnet, resize: 64, crop: 64}}"


@pytest.fixture(scope="module")
def flux_run(tmp_path_factory: pytest.TempPathFactory, flux_dir: Path) -> Path:
    """A run folder of the tiny random FLUX (16 px: 16 image tokens; the run's sampler.shift
    3, flux.guidance 3.5, 4 steps): its config.yaml and a checkpoint of random LoRA weights
    (what ``cgrpo eval --run`` reads; no training needed to check the sampler)."""
    from cgrpo.config.core import save_config
    from cgrpo.io.checkpoint import save_checkpoint
    from cgrpo.run.build import build_policy
    from tests.conftest import flux_train_config
    from tests.policies.test_flux_policy import randomise_lora

    tmp = tmp_path_factory.mktemp("flux_run")
    cfg = flux_train_config(flux_dir, tmp)
    run = tmp / "run"
    save_config(cfg, run / "config.yaml")
    policy = build_policy(cfg)
    randomise_lora(policy)
    save_checkpoint(run / "checkpoints", 1, policy.trainable_state_dict(), state={"step": 1})
    return run


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record (timestep, guidance) of every FLUX transformer forward."""
    from diffusers import FluxTransformer2DModel

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = FluxTransformer2DModel.forward

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append((kwargs["timestep"].detach().clone(), kwargs["guidance"].detach().clone()))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(FluxTransformer2DModel, "forward", spy)
    return seen


def _run_eval(run: Path, out: Path, *overrides: str) -> dict:
    args = ["eval", "--run", str(run), "--quiet", f"out_dir={out}", "protocol=dreambench"]
    args += [f"root={DREAMBENCH}", "prompts_per_subject=1", "batch_size=30", METRICS]
    assert main([*args, *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())


def _timesteps(seen: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    return sorted({round(float(t), 6) for ts, _ in seen for t in ts}, reverse=True)


def _shifted(steps: int, mu: float) -> list[float]:
    """UNO's get_schedule without its final 0: t' = e^mu / (e^mu + 1/t - 1)."""
    ts = [1 - i / steps for i in range(steps)]
    return [round(math.exp(mu) / (math.exp(mu) + 1 / t - 1), 6) for t in ts]


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="shared DreamBench folder not present")
def test_eval_draws_with_the_configured_guidance_and_shift(
    tmp_path: Path, flux_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _spy(monkeypatch)
    m = _run_eval(flux_run, tmp_path / "run_settings")
    assert {float(g) for _, gs in seen for g in gs} == {3.5}  # the run's flux.guidance
    assert _timesteps(seen) == _shifted(4, math.log(3.0))  # the run's sampler.shift, 4 steps
    assert (m["guidance"], m["shift"], m["steps"]) == (3.5, 3.0, 4)

    seen.clear()
    m = _run_eval(flux_run, tmp_path / "paper", "guidance=4", "shift=auto", "steps=3")
    assert {float(g) for _, gs in seen for g in gs} == {4.0}
    # 16 image tokens: mu = 0.5 + 0.65 * (16 - 256) / 3840 = 0.459375
    assert _timesteps(seen) == _shifted(3, 0.459375)
    assert (m["guidance"], m["steps"]) == (4.0, 3)
    assert m["shift"] == pytest.approx(math.exp(0.459375))
    source = json.loads((tmp_path / "paper" / "source.json").read_text())
    assert source["guidance"] == 4.0 and source["shift"] == m["shift"]

    seen.clear()
    m = _run_eval(flux_run, tmp_path / "uno", "shift=uno", "steps=2")
    # UNO's count at 16 px: (16 // 8)^2 // 256 = 0 tokens: mu = 0.5 - 0.65 * 256 / 3840
    assert _timesteps(seen) == _shifted(2, 0.5 - 0.65 * 256 / 3840)
    assert {float(g) for _, gs in seen for g in gs} == {3.5}
    # another guidance into a folder of images drawn with 3.5: refused
    args = ["eval", "--run", str(flux_run), "--quiet", f"out_dir={tmp_path / 'uno'}"]
    args += ["protocol=dreambench", f"root={DREAMBENCH}", "prompts_per_subject=1", METRICS]
    assert main([*args, "shift=uno", "steps=2", "guidance=2"]) == 2


def test_flux_policy_guidance_is_set_for_a_while_only(
    flux_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cgrpo.eval.evaluator import guidance_context
    from cgrpo.policies.base import HasGuidance
    from tests.policies.test_flux_policy import make_policy, refs

    policy = make_policy(flux_dir)
    assert isinstance(policy, HasGuidance)
    cond = policy.encode_condition(refs(1), ["a dog"])
    x, sigma = torch.randn(1, *policy.latent_shape()), torch.tensor([0.5])
    seen = _spy(monkeypatch)
    with guidance_context(policy, 7.0):
        inside = policy.velocity(x, sigma, cond)
    outside = policy.velocity(x, sigma, cond)
    with guidance_context(policy, None):
        policy.velocity(x, sigma, cond)
    assert [float(g) for _, g in seen] == [7.0, 3.5, 3.5]
    assert not torch.allclose(inside, outside)  # the embedding changes the velocity


def test_embedded_policy_takes_no_guidance() -> None:
    from cgrpo.eval.evaluator import EvalError, guidance_context
    from cgrpo.policies.embedded import EmbeddedPolicy

    with pytest.raises(EvalError, match="leave guidance null"):
        guidance_context(EmbeddedPolicy(), 4.0)


def _nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(protocol, "build_policy", boom)
    monkeypatch.setattr(protocol, "build_metrics", boom)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["guidance=0"], "guidance must be a finite number > 0"),
        (["guidance=-3.5"], "guidance must be a finite number > 0"),
        (["guidance=.nan"], "guidance must be a finite number > 0"),
        (["shift=0"], "shift must be a finite number > 0"),
        (["shift=.inf"], "shift must be a finite number > 0"),
        (["shift=automatic"], "config key 'shift' expects"),
        (["steps=-1"], "steps must be >= 1"),
        (["guidance=4"], "the embedded generator has no guidance embedding"),
        (["shift=auto"], "shift=auto: the resolution rule counts FLUX image tokens"),
        (["shift=uno"], "shift=uno: the resolution rule counts FLUX image tokens"),
    ],
)
def test_bad_sampling_settings_are_one_line_before_any_model_loads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    needle: str,
) -> None:
    _nothing_loads(monkeypatch)
    assert main(["eval", "--quiet", f"out_dir={tmp_path / 'ev'}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ev").exists()


def test_embedded_eval_takes_a_numeric_shift(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    assert main(["eval", "--quiet", f"out_dir={out}", "prompts_per_subject=1", "shift=1.5"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["shift"] == 1.5 and "guidance" not in m


class _Flux512:
    """What eval_shift asks of a policy: the image token count of a 512 px FLUX image."""

    def latent_shape(self) -> tuple[int, int]:
        return (1024, 64)  # (512 / 16)^2 tokens


def test_paper_eval_config_is_the_released_protocol() -> None:
    """configs/eval_dreambench.yaml samples as the release's eval_dreambench_grpo.yaml through
    UNO's pipeline: 25 steps, guidance 4, UNO's shift (16 tokens at 512 px), seed 3407, one
    image per pair of all 25 prompts; resolved on a 512 px FLUX run (flux.guidance 3.5,
    sampler.shift 3 while training)."""
    from cgrpo.config.core import load_config
    from cgrpo.eval.config import EvalConfig
    from cgrpo.run.config import TrainConfig
    from tests.sampling.test_shift import _uno_get_schedule

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(EvalConfig, root / "configs" / "eval_dreambench.yaml", [])
    assert (cfg.protocol, cfg.prompts_per_subject, cfg.images_per_pair) == ("dreambench", 25, 1)
    assert (cfg.steps, cfg.guidance, cfg.shift, cfg.seed) == (25, 4.0, "uno", 3407)
    run = load_config(TrainConfig, None, ["model.kind=flux", "flux.resolution=512"])
    assert (run.flux.guidance, run.sampler.shift) == (3.5, 3.0)  # what training draws with
    protocol.check_settings(cfg, run)
    assert protocol.eval_guidance(cfg, run) == 4.0
    policy: Any = _Flux512()
    shift = protocol.eval_shift(cfg, run, policy)
    assert shift == pytest.approx(math.exp(0.459375))  # 1.583
    want = torch.tensor(_uno_get_schedule(25, 16), dtype=torch.float64)
    assert torch.allclose(sigma_schedule(cfg.steps, shift).double(), want, atol=1e-6, rtol=0)
    cfg.shift = "auto"  # diffusers' count, 1024 tokens: another schedule
    assert protocol.eval_shift(cfg, run, policy) == pytest.approx(math.exp(0.63))  # 1.878


def test_training_evaluates_with_the_run_sampler() -> None:
    """The eval keys are ``cgrpo eval``'s alone: the trainer's evaluator (and ``cgrpo
    sample``, which draws on :func:`eval_sigmas`) keep sampler.shift and the policy's
    guidance."""
    from cgrpo.config.core import load_config
    from cgrpo.eval.evaluator import EvalPairs, build_evaluator
    from cgrpo.run.build import build_rewards, eval_sigmas
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    cfg = load_config(TrainConfig, EMBEDDED_CONFIG, ["sampler.shift=2.5"])
    pairs = EvalPairs.from_lists(torch.zeros(1, 3, 32, 32), ["a"], ["s"])
    ev = build_evaluator(cfg, pairs, build_rewards(cfg, "cpu"))
    assert torch.equal(ev.sigmas, eval_sigmas(cfg)) and ev.guidance is None
    assert torch.equal(ev.sigmas, sigma_schedule(len(ev.sigmas) - 1, 2.5))
