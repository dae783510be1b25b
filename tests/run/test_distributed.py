"""Two CPU processes (gloo) through ``accelerate launch``: the same step as one process.

A step's 3 pairs x G 4 = 12 samples split 6 / 6, so the middle group straddles the two
processes; its advantages can only be right if the rewards are gathered with group ids.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cgrpo.world
from cgrpo.io import checkpoint as ckpt
from cgrpo.run.distributed import Dist
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config
from tests.dist_worker import one_step

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Path(cgrpo.world.__file__).parent / "weights" / "base.safetensors"
STEP = ["data.prompts_per_step=3", "grpo.group_size=4", "run.eval=false", "run.image_every=0"]


def launch(
    *args: str, processes: int = 2, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` on ``processes`` CPU processes; fails the test with its output.

    accelerate's ``--cpu`` multi-process launcher goes through MPI; ``--multi_gpu`` is its
    torchrun launcher, and with ``model.device=cpu`` the trainer asks accelerate for CPU
    processes (``Accelerator(cpu=True)``: MULTI_CPU, gloo). ``config``: an accelerate
    config file instead of the flags (its process count overridden).
    """
    flags = ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no"]
    if config is not None:
        flags = ["--config_file", str(config)]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *flags,
        "--num_processes", str(processes), "--dynamo_backend", "no", "--main_process_port", "0",
        *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_give_the_one_process_step(tmp_path: Path, fsdp: bool) -> None:
    worker = str(ROOT / "tests" / "dist_worker.py")
    launch(worker, str(tmp_path), str(SHIPPED), *STEP, f"run.fsdp={str(fsdp).lower()}")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = one_step(GRPOTrainer(fast_config(tmp_path / "one", SHIPPED, *STEP)))
    # DDP: every process holds all weights; FSDP: about half each (blocks split by rows)
    held = [float(r["held"]) for r in ranks]
    if fsdp:
        assert all(0.3 < h < 0.7 for h in held) and sum(held) == pytest.approx(1.0), held
    else:
        assert held == [1.0, 1.0]

    assert [int(r["world"]) for r in ranks] == [2, 2] and int(single["world"]) == 1
    assert [r["shard"].tolist() for r in ranks] == [[0, 6], [6, 12]]
    assert single["group_ids"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for r in ranks:  # every process holds the whole step, in the one-process order
        assert torch.equal(r["group_ids"], single["group_ids"])
        for k in ("r_id", "r_p", "a_id", "a_p"):
            torch.testing.assert_close(r[k], single[k], rtol=1e-4, atol=1e-5)
    assert single["r_id"].std() > 0 and single["a_id"].abs().max() > 0.5  # not a trivial step
    assert single["grad"].abs().max() > 0
    # DDP / FSDP averaged the two halves' gradients into the one-process gradient
    torch.testing.assert_close(ranks[0]["grad"], ranks[1]["grad"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["grad"], single["grad"], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fsdp_shards_the_flux_transformer_and_trains_its_lora(
    flux_dir: Path, tmp_path: Path, dtype: str
) -> None:
    """FSDP over the tiny FLUX transformer (bf16 base + fp32 LoRA in one unit, as on GPUs):
    each process holds part of the frozen base and of the LoRA; the LoRA gradient of the
    2-process step is the 1-process one."""
    from tests.dist_worker import flux_trainer

    step = ["data.prompts_per_step=2", "grpo.group_size=3", "run.eval=false",
            f"flux.dtype={dtype}"]  # fmt: skip
    worker = str(ROOT / "tests" / "dist_worker.py")
    launch(worker, str(tmp_path), "flux", str(flux_dir), *step, "run.fsdp=true")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    (tmp_path / "one").mkdir()
    single = one_step(flux_trainer(flux_dir, tmp_path / "one", *step))

    for r in ranks:
        assert 0.2 < float(r["held"]) < 0.8 and 0.2 < float(r["held_all"]) < 0.8
        torch.testing.assert_close(r["a_id"], single["a_id"], rtol=1e-3, atol=1e-4)
    assert sum(float(r["held_all"]) for r in ranks) == pytest.approx(1.0)
    assert single["grad"].abs().max() > 0
    torch.testing.assert_close(ranks[0]["grad"], ranks[1]["grad"], rtol=0, atol=0)
    tol = {"float32": 1e-3, "bfloat16": 1e-2}[dtype]
    err = (ranks[0]["grad"] - single["grad"]).norm() / single["grad"].norm()
    assert err < tol, f"relative gradient error {float(err):.2e}"


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_cli_run_on_two_processes_resumes_on_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [
        f"model.weights={SHIPPED}", "run.threads=1", "data.eval_prompts_per_subject=1",
        "sampler.num_steps=3", "run.checkpoint_every=1", "run.image_every=1", *STEP[:2],
    ]  # fmt: skip
    launch(
        "-m",
        "cgrpo",
        "train",
        "--quiet",
        f"run.out_dir={run}",
        "run.steps=2",
        *common,
        config=ROOT / "configs" / "accelerate" / "multi_gpu.yaml",
    )  # the shipped config
    assert [r["step"] for r in _rows(run)] == ["1.0", "2.0"]  # one writer, no duplicate rows
    two = ckpt.latest_checkpoint(run / "checkpoints")
    assert two is not None and two.name == "step_000002"
    assert (run / "eval.json").is_file() and (run / "images" / "step_000001.png").is_file()

    # the checkpoint of 2 processes continues on 1
    from cgrpo.cli import main

    assert main(["train", "--resume", "--quiet", f"run.out_dir={run}", "run.steps=3", *common]) == 0
    assert [r["step"] for r in _rows(run)] == ["1.0", "2.0", "3.0"]
    three = ckpt.latest_checkpoint(run / "checkpoints")
    assert three is not None and three.name == "step_000003"
    before, _, _ = ckpt.load_checkpoint(two)
    after, state, _ = ckpt.load_checkpoint(three)
    assert int(state["step"]) == 3
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_fsdp_run_matches_one_process_and_resumes_sharded(tmp_path: Path) -> None:
    """FSDP on 2 processes: its checkpoints hold the full weights (and EMA) of the 1-process
    run, and a resumed FSDP run reshards them (weights, AdamW moments, EMA) and goes on."""
    common = [
        f"model.weights={SHIPPED}", "run.threads=1", "data.eval_prompts_per_subject=1",
        "sampler.num_steps=3", "run.checkpoint_every=1", "run.image_every=0", *STEP[:2],
        "optim.ema_decay=0.5",
    ]  # fmt: skip
    fsdp, one = tmp_path / "fsdp", tmp_path / "one"
    launch("-m", "cgrpo", "train", "--quiet", f"run.out_dir={fsdp}", "run.steps=2",
           "run.fsdp=true", *common)  # fmt: skip
    from cgrpo.cli import main

    assert main(["train", "--quiet", f"run.out_dir={one}", "run.steps=2", *common]) == 0
    sharded, state, _ = ckpt.load_checkpoint(fsdp / "checkpoints" / "step_000002")
    single, single_state, _ = ckpt.load_checkpoint(one / "checkpoints" / "step_000002")
    assert sharded.keys() == single.keys()
    base, _, _ = ckpt.load_checkpoint(one / "checkpoints" / "step_000001")
    assert any(not torch.equal(base[k], single[k]) for k in single)  # training moved them
    for k in single:  # whole tensors, as one process trains them
        torch.testing.assert_close(sharded[k], single[k], rtol=1e-3, atol=1e-5)
    moments = [s["exp_avg_sq"] for s in state["optimizer"]["state"].values()]
    ref = [s["exp_avg_sq"] for s in single_state["optimizer"]["state"].values()]
    assert [m.shape for m in moments] == [r.shape for r in ref]
    assert len(state["ema"]) == len(single_state["ema"])  # the evaluation used these weights
    for e, e_one in zip(state["ema"], single_state["ema"], strict=True):
        torch.testing.assert_close(e, e_one, rtol=1e-3, atol=1e-5)
    # the evaluation (8 held-out pairs over 2 processes) agrees with the one-process one
    ev, ev_one = (json.loads((r / "eval.json").read_text()) for r in (fsdp, one))
    assert ev["base"]["per_image"] == ev_one["base"]["per_image"]
    for key in ("identity", "prompt"):
        assert ev["trained"]["overall"][key] == pytest.approx(
            ev_one["trained"]["overall"][key], abs=1e-3
        )

    launch("-m", "cgrpo", "train", "--quiet", "--resume", f"run.out_dir={fsdp}", "run.steps=3",
           "run.fsdp=true", *common)  # fmt: skip
    assert [r["step"] for r in _rows(fsdp)] == ["1.0", "2.0", "3.0"]
    after, state3, _ = ckpt.load_checkpoint(fsdp / "checkpoints" / "step_000003")
    assert int(state3["step"]) == 3
    assert any(not torch.equal(sharded[k], after[k]) for k in after)
    assert any(not torch.equal(a, b) for a, b in zip(state["ema"], state3["ema"], strict=True))
    step3 = [s["step"] for s in state3["optimizer"]["state"].values()]
    assert all(int(s) == 3 for s in step3)  # AdamW continued from the restored moments


class _Place:
    """What :class:`Dist` reads of an accelerator: this process's rank and the count."""

    def __init__(self, rank: int, world: int) -> None:
        self.process_index, self.num_processes = rank, world


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9])
def test_padded_share_gives_every_process_as_many_items(n: int) -> None:
    shares = [Dist(_Place(r, 3)).padded_share(n) for r in range(3)]
    assert len({len(idx) for idx, _ in shares}) == 1  # equal counts: FSDP stays in step
    real = sorted(i for idx, k in shares for i in idx[:k])
    assert real == list(range(n))  # each item exactly once among the real ones
    assert all(set(idx) <= set(range(n)) for idx, _ in shares)


def test_evaluation_pads_a_short_share_and_drops_the_padding(tmp_path: Path) -> None:
    """8 pairs on 3 processes: process 2 has 2 pairs; it samples 3 (as processes 0 and 1
    do) and reports only its 2."""
    from cgrpo.eval.evaluator import build_evaluator

    trainer = GRPOTrainer(fast_config(tmp_path, SHIPPED, "run.eval_steps=2"))
    pairs = trainer.eval_pairs
    assert len(pairs) == 8
    calls, seen = [], []
    velocity = trainer.policy.velocity
    trainer.policy.velocity = lambda x, s, c: calls.append(len(x)) or velocity(x, s, c)

    class Third(Dist):
        def gather_objects(self, items):  # what process 2 contributes
            seen.extend(items)
            return items

    for rank in (0, 2):
        calls.clear(), seen.clear()
        ev = build_evaluator(
            trainer.cfg, pairs, trainer.rewards, dist=Third(_Place(rank, 3)), images_per_pair=1
        )
        ev.run(trainer.policy)
        assert calls == [3, 3]  # 2 sampler steps over 3 images, padded or not
        assert [x[0] for x in seen] == list(range(rank, 8, 3))


@pytest.mark.parametrize("plugin", ["FSDP", "DEEPSPEED"])
def test_accelerates_sharding_plugins_are_refused(
    monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    """Sharding is run.fsdp's: accelerate's FSDP / DeepSpeed launches get one message."""
    monkeypatch.setenv(f"ACCELERATE_USE_{plugin}", "true")
    with pytest.raises(ValueError, match=r"multi_gpu\.yaml.*run\.fsdp=true"):
        Dist.from_env("cpu", fsdp=True)


def test_fsdp_needs_a_shardable_policy() -> None:
    with pytest.raises(ValueError, match="shard_modules"):
        Dist(_Place(0, 2), fsdp=True).shard_policy(object())  # type: ignore[arg-type]


def test_fsdp_flux_run_checkpoints_the_whole_lora_and_resumes_sharded(
    flux_dir: Path, tmp_path: Path
) -> None:
    """`cgrpo train run.fsdp=true` on the tiny FLUX model (2 processes): the checkpoint is
    the 1-process run's whole LoRA (no frozen weight), and it resumes sharded."""
    from cgrpo.cli import main
    from cgrpo.config.core import save_config
    from tests.conftest import flux_train_config

    steps = ["run.eval=false", "run.image_every=0", "run.checkpoint_every=1"]
    cfg = flux_train_config(flux_dir, tmp_path, *steps)
    save_config(cfg, tmp_path / "flux.yaml")
    run, one = tmp_path / "fsdp", tmp_path / "one"
    train = ["-m", "cgrpo", "train", "--config", str(tmp_path / "flux.yaml"), "--quiet"]
    launch(*train, f"run.out_dir={run}", "run.steps=2", "run.fsdp=true")
    assert main([*train[2:], f"run.out_dir={one}", "run.steps=2"]) == 0
    sharded, _, _ = ckpt.load_checkpoint(run / "checkpoints" / "step_000002")
    single, _, _ = ckpt.load_checkpoint(one / "checkpoints" / "step_000002")
    assert sharded.keys() == single.keys() and all("lora_" in k for k in sharded)
    # the 1-process weights, up to the order FSDP reduce-scatters the gradient in: an
    # element whose gradient is ~0 may take a visibly different Adam step (seen: single
    # elements off by 1.3 % to 12 % of one step, varying between runs, at the commit before
    # the redesign too, which the old element-wise rtol/atol check tripped on now and then).
    # So: the whole difference is < 1 % of the last step's movement.
    prev, _, _ = ckpt.load_checkpoint(one / "checkpoints" / "step_000001")
    diff = torch.cat([(sharded[k] - single[k]).flatten() for k in single])
    moved = torch.cat([(single[k] - prev[k]).flatten() for k in single])
    assert float(diff.norm()) < 0.01 * float(moved.norm())

    launch(*train, "--resume", f"run.out_dir={run}", "run.steps=3", "run.fsdp=true")
    after, state, _ = ckpt.load_checkpoint(run / "checkpoints" / "step_000003")
    assert int(state["step"]) == 3 and after.keys() == sharded.keys()
    assert any(not torch.equal(sharded[k], after[k]) for k in after)
    assert all(int(s["step"]) == 3 for s in state["optimizer"]["state"].values())
