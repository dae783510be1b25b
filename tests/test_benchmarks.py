"""The benchmark scripts run end to end (tiny model, seconds); their figures are not checked
(the library behind them is tested in tests/experiments)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cgrpo.experiments.records import read_record, write_record

ROOT = Path(__file__).resolve().parents[1]
TINY = ["run.threads=1", "data.prompts_per_step=2", "grpo.group_size=4", "sampler.num_steps=3"]


def _run(*args: str, check: bool = True) -> str:
    """The script's stdout (with ``check=False`` stdout + stderr, whatever its exit code)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if not check:
        return proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_step_cost_prints_phases(tiny_weights: Path) -> None:
    out = _run("benchmarks/step_cost.py", "--steps", "1", f"model.weights={tiny_weights}", *TINY)
    for word in ("sample:", "reward:", "update:", "reward share", "overhead vs bare"):
        assert word in out


def test_reward_overlap_prints_both_modes(tiny_weights: Path) -> None:
    args = ["--steps", "1", "--ms-per-image", "1", "--micro-batch", "2"]
    out = _run("benchmarks/reward_overlap.py", *args, f"model.weights={tiny_weights}", *TINY)
    for word in (
        "after    step median",
        "overlap  step median",
        "overlap saves",
        "between the modes",
    ):
        assert word in out


def test_competitive_degradation_writes_report_and_resumes(
    tmp_path: Path, tiny_weights: Path
) -> None:
    doc = tmp_path / "docs" / "results.md"
    args = [
        "benchmarks/competitive_degradation.py", "--seeds", "1", "--steps", "2",
        "--eval-every", "1", "--arms", "naive_1_1", "naive_0.5_0.5", "sars_tdw", "--jobs", "2",
        "--out", str(tmp_path / "runs"), "--doc", str(doc), "--eval-images", "1",
        "--budget-images", "3", f"model.weights={tiny_weights}",
        "data.eval_prompts_per_subject=1", *TINY,
    ]  # fmt: skip
    out = _run(*args)
    assert out.count("[done]") == 3 and "verdicts: budget: met in" in out and "; 1: " in out
    # the budget test's 3-noise evaluation reuses the final evaluation's first draw
    budget = tmp_path / "runs" / "sars_tdw" / "seed0" / "eval_budget"
    assert json.loads((budget / "metrics.json").read_text())["images_per_pair"] == 3
    first = sorted((budget / "images").rglob("*_0.png"))
    assert first and all(f.stat().st_nlink == 2 for f in first)
    final = json.loads((budget.parent / "eval_final" / "metrics.json").read_text())
    per3 = json.loads((budget / "metrics.json").read_text())["per_image"]["identity"]
    assert per3[::3] == final["per_image"]["identity"]  # draw 0 of each pair: the same image
    text = doc.read_text()
    for needle in (
        "naive GRPO 0.5:0.5", "SARS + TDW", "paired SE", "--seeds 1 --steps 2",
        "rewards in every seed, measured on 3 noises per pair)",
        "**1. Competitive degradation**", "**4. SARS + TDW reaches", "pasting the reference",
    ):  # fmt: skip
        assert needle in text
    assert (tmp_path / "docs" / "images" / "results_pareto.png").is_file()
    # the base evaluation is the runs' own starting model: the tiny random weights draw no
    # subject (identity 0), where the shipped base model scores about 0.5
    base = json.loads((tmp_path / "runs" / "base_eval" / "metrics.json").read_text())
    assert base["model"] == "base" and base["overall"]["identity"] < 0.1
    assert _run(*args).count("[skip]") == 3  # finished runs are not trained again
    # --against pairs each run with the same arm and seed of another sweep: here itself
    paired = tmp_path / "paired.md"
    report = [a if a != str(doc) else str(paired) for a in args] + ["--report-only"]
    _run(*report, "--against", str(tmp_path / "runs"))
    text = paired.read_text().split("### Paired against")[1]
    assert "| SARS + TDW | 0 | +0.0000 (1 seed) | +0.0000 (1 seed) |" in text
    # a run stopped after training resumes from its checkpoint: no step is trained again
    run = tmp_path / "runs" / "sars_tdw" / "seed0"
    rows = (run / "metrics.csv").read_text()
    shutil.rmtree(run / "eval_final")
    ev = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({"base": ev["base"]}))
    assert _run(*args).count("[done]") == 1
    assert (run / "metrics.csv").read_text() == rows
    redrawn = json.loads((run / "eval_final" / "metrics.json").read_text())
    assert redrawn["per_image"] == final["per_image"]  # the same checkpoint, drawn again
    # a folder trained with other settings (here: fewer steps) is neither skipped nor resumed
    other = [a if a != "2" else "1" for a in args]
    proc = subprocess.run([sys.executable, *other], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)  # fmt: skip
    assert proc.returncode != 0 and "run.steps" in proc.stderr and "differ" in proc.stderr


def test_competitive_degradation_continues_a_run_to_more_steps(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """A finished run given a larger --steps trains on from its checkpoint, and ends where a
    run started with that budget ends: the same rows, weights and final images."""
    from safetensors.torch import load_file

    def sweep(out: Path, steps: int) -> str:
        return _run(
            "benchmarks/competitive_degradation.py", "--seeds", "1", "--steps", str(steps),
            "--eval-every", "1", "--arms", "sars_tdw", "--out", str(out),
            "--doc", str(tmp_path / "results.md"), "--eval-images", "1", "--budget-images", "2",
            f"model.weights={tiny_weights}", "data.eval_prompts_per_subject=1", *TINY,
        )  # fmt: skip

    sweep(tmp_path / "short", 2)
    first = (tmp_path / "short" / "sars_tdw" / "seed0" / "metrics.csv").read_text()
    report = [
        "benchmarks/competitive_degradation.py", "--steps", "3", "--report-only", "--out",
        str(tmp_path / "short"), "--eval-every", "1", "--eval-images", "1",
        f"model.weights={tiny_weights}", "data.eval_prompts_per_subject=1", *TINY,
    ]  # fmt: skip
    assert "not in this --steps 3 report: sars_tdw seed0 (step 2)" in _run(*report, check=False)
    assert sweep(tmp_path / "short", 3).count("[done]") == 1
    # no --doc: a side sweep's report goes beside its runs, never to docs/results.md
    assert f"wrote {tmp_path / 'short' / 'report.md'}" in _run(*report)
    assert "| SARS + TDW |" in (tmp_path / "short" / "report.md").read_text()
    sweep(tmp_path / "long", 3)
    short, long = (tmp_path / r / "sars_tdw" / "seed0" for r in ("short", "long"))
    for name in ("eval_final_step000002", "eval_budget_step000002"):  # the 2-step figures kept
        assert json.loads((short / name / "metrics.json").read_text())["checkpoint"].endswith("2")

    def rows(run: Path) -> list[dict[str, str]]:
        import csv

        with (run / "metrics.csv").open() as f:  # (the phases' seconds differ run to run)
            return [
                {k: v for k, v in r.items() if not k.startswith("sec_")} for r in csv.DictReader(f)
            ]

    assert len(rows(long)) == 3 and rows(short) == rows(long)
    # continued, not trained again: its first two steps' rows are kept byte for byte
    assert (short / "metrics.csv").read_text().startswith(first)
    a, b = (
        load_file(next((r / "checkpoints" / "step_000003").glob("*.safetensors")))
        for r in (short, long)
    )
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    finals = [
        json.loads((r / e / "metrics.json").read_text())["per_image"]
        for r in (short, long)
        for e in ("eval_final", "eval_budget")
    ]
    assert finals[0] == finals[2] and finals[1] == finals[3]
    # a time budget would end a run off its --steps, where continuing could not match it
    out = _run("benchmarks/competitive_degradation.py", "--out", str(tmp_path / "t"),
               "run.time_budget=5", check=False)  # fmt: skip
    assert "drop the run.time_budget / run.log_every override" in out
    assert not (tmp_path / "t").exists()


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

    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "benchmarks/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip

    for scheme in ("uno", "kontext"):
        proc = check(scheme)
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr
        assert "nothing was run" in proc.stderr and proc.stdout == ""
    proc = check()  # one scheme per command: named, or a usage line
    assert proc.returncode == 2 and proc.stderr.startswith("usage: bash benchmarks/gpu_check.sh")


def test_competitive_degradation_records_outlive_the_run_folders(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """--records keeps each finished run's figures (no checkpoint, no image); on a machine
    without the run folders they are copied back and not trained again, and the report
    reads them as it read the runs. --eval-prompts sizes the final evaluation."""

    def sweep(out: str, *extra: str, steps: int = 2, check: bool = True) -> str:
        return _run(
            "benchmarks/competitive_degradation.py", "--seeds", "1", "--steps", str(steps),
            "--eval-every", "1", "--arms", "sars_tdw", "naive_1_1", "--out", str(tmp_path / out),
            "--doc", str(tmp_path / f"{out}.md"), "--eval-images", "1", "--eval-prompts", "2",
            "--budget-images", "0", "--records", str(tmp_path / "rec"), *extra,
            f"model.weights={tiny_weights}", "data.eval_prompts_per_subject=1", *TINY,
            check=check,
        )  # fmt: skip

    first = sweep("a")
    final = tmp_path / "a" / "sars_tdw" / "seed0" / "eval_final" / "metrics.json"
    assert json.loads(final.read_text())["pairs"] == 16  # 8 held-out subjects x 2 prompts
    rec = tmp_path / "rec"
    kept = {p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file()}
    # one compressed file per run, and one of the base: no checkpoint, no image
    assert kept == {"sars_tdw/seed0.json.gz", "naive_1_1/seed0.json.gz", "base_eval.json.gz"}
    assert "eval_final/metrics.json" in read_record(rec / "sars_tdw" / "seed0.json.gz")
    assert "metrics.json" in read_record(rec / "base_eval.json.gz")
    second = sweep("b")  # a new machine: no run folder, only the records
    assert "restored from" in second and second.count("[skip]") == 2 and "[done]" not in second
    verdicts = [line for line in first.splitlines() if line.startswith("verdicts:")]
    assert verdicts == [line for line in second.splitlines() if line.startswith("verdicts:")]
    tables = [
        (tmp_path / f"{d}.md").read_text().split("### At the end of training")[1].split("![")[0]
        for d in "ab"
    ]  # (each page names its own figures)
    assert tables[0] == tables[1] and "SARS + TDW" in tables[0]
    # a record of other settings is never replaced by a run of this command's
    record = rec / "sars_tdw" / "seed0.json.gz"
    files = read_record(record)
    files["config.yaml"] = files["config.yaml"].replace("  lr: ", "  lr: 1", 1)
    write_record(record, files)
    out = sweep("a", "--report-only", check=False)
    assert "records a run of other settings (optim.lr differ)" in out
    assert "use another --records folder" in out
    assert "  lr: 1" in read_record(record)["config.yaml"]
    # the report reads no run of other settings: the base's here (the schedule) refuses it
    out = sweep("c", "--report-only", "sampler.schedule.kind=full", check=False)
    assert "evaluated a base of other settings (sampler.schedule differ)" in out
    # nor asks the records for images they do not keep
    out = sweep("b", "--report-only", "--budget-images", "2", check=False)
    assert "has no images to extend to --budget-images 2" in out
    # a record has no checkpoint to continue from
    out = sweep("b", steps=3, check=False)
    assert "cannot be continued to more steps" in out and "use another --out" in out
    # a base evaluation of another size is refused before anything is trained
    out = _run(
        "benchmarks/competitive_degradation.py", "--seeds", "1", "--steps", "2",
        "--arms", "sars_tdw", "--out", str(tmp_path / "a"), "--eval-images", "1",
        "--eval-prompts", "3", f"model.weights={tiny_weights}",
        "data.eval_prompts_per_subject=1", *TINY, check=False,
    )  # fmt: skip
    assert "evaluated 16 pairs x 1 noises, this command asks for 24 x 1" in out


def test_memory_table_counts_the_papers_lora_and_prints_both_schemes() -> None:
    """benchmarks/memory_table.py: the exact LoRA count docs/gpu.md quotes, one table per
    scheme, Kontext's longer reference costing more activations, HPS-v3 adding its 16.6 GB."""
    out = _run("benchmarks/memory_table.py")
    assert "LoRA (uno, rank 512) 956,301,312 in 152 layers" in out
    tables = {s: out.split(f"\n{s}: ")[1] for s in ("uno", "kontext")}
    act = {s: float(t.split("activations, micro-batch 4")[1].split("|")[1].split()[0])
           for s, t in tables.items()}  # fmt: skip
    assert act["kontext"] > 2 * act["uno"] > 0
    for t in tables.values():
        own = float(t.split("on its own GPU / server** |")[1].split()[0])
        shared = float(t.split("on the training GPU** |")[1].split()[0])
        assert abs(shared - own - 16.6) < 0.11
    docs = (ROOT / "docs" / "gpu.md").read_text()
    assert out.strip() in docs  # docs/gpu.md quotes the script as it prints


def test_ode_solver_prints_a_row_per_solver_and_steps(tiny_weights: Path) -> None:
    """benchmarks/ode_solver.py: Heun at equal model passes, the RMSE and reward columns."""
    out = _run(
        "benchmarks/ode_solver.py", "--pairs", "4", "--steps", "2", "3",
        "--reference-steps", "6", f"model.weights={tiny_weights}",
        "data.eval_prompts_per_subject=1",
    )  # fmt: skip
    assert "RMSE to ref (8-bit)" in out and "identity (diff to ref" in out
    rows = [
        line.split(" | ") for line in out.splitlines() if line.startswith("| ") and "|-" not in line
    ][1:]
    assert [(r[0][2:], r[1], r[2]) for r in rows] == [
        ("euler", "2", "2"), ("dpm2m", "2", "2"), ("heun", "1", "1"),
        ("euler", "3", "3"), ("dpm2m", "3", "3"), ("heun", "2", "3"),
    ]  # fmt: skip


def test_readme_figures_from_a_run_folder(tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "run"
    (run / "images").mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"steps": 3}))
    Image.new("RGB", (40, 30), "red").save(run / "progress.png")
    for name, colour in (("eval_base", "blue"), ("eval_trained", "green")):
        Image.new("RGB", (64, 32), colour).save(run / "images" / f"{name}.png")
    out = _run("benchmarks/readme_figures.py", str(run), "--out", str(tmp_path / "docs"))
    assert "default_base_vs_trained.png" in out
    copied = Image.open(tmp_path / "docs" / "default_progress.png")
    assert copied.size == (40, 30)
    pair = Image.open(tmp_path / "docs" / "default_base_vs_trained.png").convert("RGB")
    assert pair.size == (16 + 16 + 16, 22 + 8)  # two grids at 1/4, a gap, a title strip
    assert pair.getpixel((8, 26)) == (0, 0, 255) and pair.getpixel((40, 26)) == (0, 128, 0)


def test_advantage_mix_shapes_the_same_advantages_per_arm() -> None:
    """Every arm reads the same advantages: halving both static weights halves the scale (so
    the KL's relative weight doubles) and leaves the identity share, which is 1/2 for 1:1 on
    independent advantages of equal spread and follows the larger spread otherwise; only
    SARS adds a bonus."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "advantage_mix", ROOT / "benchmarks/advantage_mix.py"
    )
    mix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mix)
    g = torch.Generator().manual_seed(0)
    a = {
        "identity": torch.randn(20000, generator=g).double(),
        "prompt": torch.randn(20000, generator=g).double(),
    }
    fig = {
        arm: mix.arm_figures(arm, a, overrides=[]) for arm in ("naive_1_1", "naive_0.5_0.5", "sars")
    }
    one, half = fig["naive_1_1"], fig["naive_0.5_0.5"]
    assert half["scale"] == pytest.approx(one["scale"] / 2, rel=2e-3)  # adv_clip 5 aside
    assert half["id share"] == pytest.approx(one["id share"], abs=1e-4)
    assert one["id share"] == pytest.approx(0.5, abs=0.02)
    assert one["bonus"] == 0 and fig["sars"]["bonus"] > 0.05
    wide = mix.arm_figures("naive_1_1", {**a, "identity": 2 * a["identity"]}, overrides=[])
    assert wide["id share"] == pytest.approx(0.8, abs=0.02)  # 4 / (4 + 1)


def test_advantage_mix_says_when_every_group_is_flat(tiny_weights: Path) -> None:
    args = ["--draws", "1", f"model.weights={tiny_weights}", *TINY]
    out = _run("benchmarks/advantage_mix.py", *args, check=False)
    assert "advantages 0); raise --draws, or use a model whose samples differ" in out


def test_advantage_mix_by_step_prints_a_row_per_sampler_step(tiny_weights: Path) -> None:
    args = ["--by-step", "--draws", "1", f"model.weights={tiny_weights}", *TINY]
    rows = [line.split() for line in _run("benchmarks/advantage_mix.py", *args).splitlines()]
    steps = [r for r in rows if r and r[0].isdigit()]
    assert [r[0] for r in steps] == ["0", "1", "2"]  # sampler.num_steps=3
    from cgrpo.method.weighting import TimeAwareWeights

    for r in steps:  # TDW's weights at the step's own index
        w_id, w_p = TimeAwareWeights().weights(int(r[0]), 3)
        assert (float(r[1]), float(r[2])) == (
            pytest.approx(w_id, abs=1e-3),
            pytest.approx(w_p, abs=1e-3),
        )
