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
