"""The benchmark scripts run end to end (tiny model, seconds); their figures are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["run.threads=1", "data.prompts_per_step=2", "grpo.group_size=4", "sampler.num_steps=3"]


def _run(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_step_cost_prints_phases(tiny_weights: Path) -> None:
    out = _run("benchmarks/step_cost.py", "--steps", "1", f"model.weights={tiny_weights}", *TINY)
    for word in ("sample:", "reward:", "update:", "reward share", "overhead vs bare"):
        assert word in out


def test_competitive_degradation_writes_report(tmp_path: Path, tiny_weights: Path) -> None:
    doc = tmp_path / "docs" / "results.md"
    args = [
        "benchmarks/competitive_degradation.py", "--seeds", "1", "--steps", "2",
        "--arms", "naive_1_1.5", "sars_tdw", "--out", str(tmp_path / "runs"),
        "--doc", str(doc), "--eval-images", "1", f"model.weights={tiny_weights}",
        "data.eval_prompts_per_subject=1", *TINY,
    ]  # fmt: skip
    out = _run(*args)
    assert out.count("[done]") == 2
    text = doc.read_text()
    for needle in ("naive GRPO 1:1.5", "SARS + TDW", "paired SE", "--seeds 1 --steps 2"):
        assert needle in text
    assert (tmp_path / "docs" / "images" / "results_pareto.png").is_file()
    # the base evaluation is the runs' own starting model: the tiny random weights draw no
    # subject (identity 0), where the shipped base model scores about 0.5
    base = json.loads((tmp_path / "runs" / "base_eval" / "metrics.json").read_text())
    assert base["model"] == "base" and base["overall"]["identity"] < 0.1
    assert "[skip]" in _run(*args)  # finished runs are not trained again


def test_flux_step_reports_memory_and_time_per_process() -> None:
    out = _run(
        "benchmarks/flux_step.py", "--preset", "tiny", "--steps", "1", "model.device=cpu",
        "flux.resolution=16", "flux.lora_rank=4", "flux.dtype=float32", "grpo.group_size=2",
        "sampler.num_steps=2", "run.threads=1",
    )  # fmt: skip
    assert "CPU x 1 process(es), single" in out and "G 2, 2 steps" in out
    row = out.strip().splitlines()[-1].split()  # rank 0: holds everything in one process
    assert row[:3] == ["0", "100.0%", "100.0%"] and all(float(v) > 0 for v in row[4:6])


def test_learning_efficiency_writes_report_and_resumes(tmp_path: Path, tiny_weights: Path) -> None:
    doc = tmp_path / "docs" / "learning_efficiency.md"
    args = [
        "benchmarks/learning_efficiency.py", "--seeds", "1", "--budget", "0.5",
        "--arms", "grpo_branch", "nft_full", "supervised", "--jobs", "2",
        "--out", str(tmp_path / "runs"), "--doc", str(doc), "--eval-images", "1",
        f"model.weights={tiny_weights}", "data.eval_prompts_per_subject=1", *TINY,
    ]  # fmt: skip
    out = _run(*args)
    assert out.count("[done]") == 3
    text = doc.read_text()
    for needle in (
        "NFT, full SDE rollouts",
        "supervised FM",
        "gap closed identity",
        "--budget 0.5",
    ):
        assert needle in text
    assert (tmp_path / "docs" / "images" / "learning_efficiency.png").is_file()
    for arm in ("grpo_branch", "nft_full", "supervised"):  # the budget stopped each run
        run = tmp_path / "runs" / arm / "seed0"
        assert (run / "eval_final" / "metrics.json").is_file()
    assert out.count("[skip]") == 0 and _run(*args).count("[skip]") == 3


def test_flux_step_times_every_schedule_and_objective() -> None:
    out = _run(
        "benchmarks/flux_step.py", "--preset", "tiny", "--steps", "1", "--variants",
        "model.device=cpu", "flux.resolution=16", "flux.lora_rank=4", "flux.dtype=float32",
        "grpo.group_size=2", "sampler.num_steps=4", "run.threads=1",
    )  # fmt: skip
    rows = [ln.split() for ln in out.splitlines() if ln.split()[:1] and ln.split()[0] in (
        "grpo_full", "grpo_window", "grpo_branch", "nft_full", "nft_branch")]  # fmt: skip
    assert len(rows) == 5 and all(float(r[3]) > 0 for r in rows)


def test_hps_worker_speed_prints_images_per_second() -> None:
    out = _run("benchmarks/hps_worker_speed.py", "--images", "4", "--size", "16", "--repeats", "1")
    assert "images/s" in out and "4 images of 16 px" in out


def test_gradient_snr_prints_each_variant(tiny_weights: Path) -> None:
    out = _run(
        "benchmarks/gradient_snr.py", "--draws", "2", f"model.weights={tiny_weights}", *TINY,
        "--variants", "grpo_branch", "nft_full", "branch_identity", "branch_prompt", "supervised",
    )  # fmt: skip
    assert "grpo_branch" in out and "nft_full" in out and "cosine" in out
    assert "supervised" in out and "identity vs prompt gradient of the same step" in out


def test_gpu_check_stops_at_once_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is present: the check itself runs (minutes), not its refusal")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert (
        proc.returncode == 2
        and "no CUDA device" in proc.stderr
        and "nothing was run" in proc.stderr
    )
