"""Everything a run can check is checked before the transformer loads: the pairs, every
FLUX file, then the rewards (built first: a reward that cannot load stops the run before
the policy does)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cgrpo.policies.flux.config import FluxWeightsError
from cgrpo.run import build
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import flux_train_config


@pytest.fixture
def policy_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every policy build the trainer asks for (and still build it)."""
    calls: list[str] = []
    inner = build.build_policy

    def recording(cfg, *args, **kwargs):
        calls.append(cfg.model.kind)
        return inner(cfg, *args, **kwargs)

    monkeypatch.setattr(build, "build_policy", recording)
    return calls


def test_a_missing_reward_folder_stops_the_run_before_the_policy_loads(
    flux_dir: Path, tmp_path: Path, policy_builds: list[str]
) -> None:
    cfg = flux_train_config(
        flux_dir, tmp_path, f"rewards.identity={{kind: dinov2, path: {tmp_path / 'nope'}}}"
    )
    with pytest.raises(FileNotFoundError, match="dinov2 reward: weights folder"):
        GRPOTrainer(cfg)
    assert policy_builds == []


@pytest.mark.parametrize("missing", ["vae", "text_encoder_2", "start_lora"])
def test_a_missing_flux_file_stops_the_run_before_rewards_or_policy(
    missing: str, flux_dir: Path, tmp_path: Path, policy_builds: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A FLUX component folder (read lazily, e.g. T5 only on a prompt-cache miss) or the
    start LoRA missing is one line before any reward or the transformer is built."""
    rewards_built: list[str] = []
    monkeypatch.setattr(build, "build_rewards", lambda *a, **k: rewards_built.append("x"))
    folder = tmp_path / "flux"
    shutil.copytree(flux_dir, folder)
    extra = []
    if missing == "start_lora":
        extra = [f"flux.start_lora={tmp_path / 'uno' / 'dit_lora.safetensors'}"]
    else:
        shutil.rmtree(folder / missing)
    cfg = flux_train_config(folder, tmp_path, *extra)
    with pytest.raises(FluxWeightsError) as err:
        GRPOTrainer(cfg)
    assert "\n" not in str(err.value)
    assert (missing if missing != "start_lora" else "flux.start_lora") in str(err.value)
    assert rewards_built == [] and policy_builds == []


def test_cgrpo_eval_checks_pairs_and_flux_files_before_the_metric_models(
    flux_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cgrpo eval of a FLUX config on DreamBench: a missing VAE folder is one line before
    any metric model or the policy is built (the pairs are read first)."""
    import cgrpo.eval.protocol as protocol
    from cgrpo.config.core import save_config
    from cgrpo.eval.config import EvalConfig

    built: list[str] = []
    monkeypatch.setattr(protocol, "build_metrics", lambda *a, **k: built.append("metrics"))
    monkeypatch.setattr(protocol, "build_policy", lambda *a, **k: built.append("policy"))
    folder = tmp_path / "flux"
    shutil.copytree(flux_dir, folder)
    shutil.rmtree(folder / "vae")
    save_config(flux_train_config(folder, tmp_path), tmp_path / "train.yaml")
    from tests.data.test_syncd import DREAMBENCH

    if not (DREAMBENCH / "single_reference.json").is_file():
        pytest.skip("DreamBench not found")
    cfg = EvalConfig(
        protocol="dreambench", root=str(DREAMBENCH), prompts_per_subject=1,
        out_dir=str(tmp_path / "eval"),
    )  # fmt: skip
    with pytest.raises(FluxWeightsError, match="FLUX VAE weights missing"):
        protocol.eval_command(cfg, None, tmp_path / "train.yaml", quiet=True)
    assert built == []
