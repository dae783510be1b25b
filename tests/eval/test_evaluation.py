"""``cgrpo eval``: embedded protocol end to end, resumability, errors, DreamBench with FLUX."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import cgrpo.world
from cgrpo.cli import main
from cgrpo.config.core import load_config
from cgrpo.eval.config import EvalConfig
from cgrpo.eval.protocol import build_metrics, eval_command, evaluate_protocol
from cgrpo.run.config import TrainConfig
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config
from tests.policies.test_flux_policy import make_policy

DREAMBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "dreambench"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps from the shipped base weights (so images and rewards are not trivial)."""
    run = tmp_path_factory.mktemp("run") / "run"
    shipped = Path(cgrpo.world.__file__).parent / "weights" / "base.safetensors"
    GRPOTrainer(fast_config(run, shipped, "run.eval=false")).train(quiet=True)
    return run


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _eval(run: Path, out: Path, *overrides: str) -> int:
    return main(["eval", "--run", str(run), "--quiet", f"out_dir={out}", *overrides])


def test_eval_run_writes_every_output(tmp_path: Path, trained_run: Path) -> None:
    out = tmp_path / "ev"
    assert _eval(trained_run, out, "base=true", "prompts_per_subject=2", "images_per_pair=1") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["pairs"], m["subjects"], m["images"]) == (16, 8, 16)
    assert m["weights"] == "raw"  # the run had no EMA
    assert m["identity_column"] == "identity" and m["prompt_column"] == "prompt"
    assert m["checkpoint"].startswith("step_")
    rows = _csv(out / "metrics.csv")
    assert len(rows) == 16 and len({r["subject"] for r in rows}) == 8
    with (out / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert len(header) == len(set(header))  # no column shadows another
    assert all(r["prompt_text"].split()[0] in ("a", "an") for r in rows)
    for col in ("identity", "prompt"):
        vals = np.array([float(r[col]) for r in rows])
        assert ((vals >= 0) & (vals <= 1)).all() and vals.std() > 0
        assert m["overall"][col] == pytest.approx(vals.mean(), abs=1e-6)
        for s, per in m["per_subject"].items():
            sub = [float(r[col]) for r in rows if r["subject"] == s]
            assert per[col] == pytest.approx(np.mean(sub), abs=1e-6)
    for r in rows:
        assert (out / r["file"]).is_file()
    assert (out / "grid.png").is_file()
    legend = "identity = reward 'embedded_identity', prompt = reward 'embedded_prompt'"
    assert legend in (out / "per_subject.md").read_text()
    assert m["columns"] == {"identity": "embedded_identity", "prompt": "embedded_prompt"}
    # the base model is evaluated on the same pairs and noise, in base/
    b = json.loads((out / "base" / "metrics.json").read_text())
    assert m["base"]["overall"] == b["overall"] and b["checkpoint"] is None
    # training changed the weights (lr 1e-3), so trained images differ from base ones
    diff = [(out / r["file"]).read_bytes() != (out / "base" / r["file"]).read_bytes() for r in rows]
    assert any(diff)


def test_eval_resumes_with_same_numbers(tmp_path: Path, trained_run: Path) -> None:
    out = tmp_path / "ev"
    assert _eval(trained_run, out, "prompts_per_subject=2", "images_per_pair=2") == 0
    first = json.loads((out / "metrics.json").read_text())
    files = sorted((out / "images").rglob("*.png"))
    assert len(files) == 32
    # the two images of a pair come from different noise
    assert files[0].read_bytes() != files[1].read_bytes()
    kept, lost = files[::2], files[1::2]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    old = {p: p.read_bytes() for p in lost}
    for p in lost:  # an interrupted evaluation: half the images missing, no metrics
        p.unlink()
    (out / "metrics.json").unlink()
    assert _eval(trained_run, out, "prompts_per_subject=2", "images_per_pair=2") == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not drawn again
    assert all(p.read_bytes() == b for p, b in old.items())  # redrawn identically
    assert json.loads((out / "metrics.json").read_text())["overall"] == first["overall"]


def test_eval_refuses_to_mix_settings(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ev"
    assert _eval(trained_run, out, "prompts_per_subject=1") == 0
    assert _eval(trained_run, out, "prompts_per_subject=1", "seed=5") == 2
    err = capsys.readouterr().err
    assert "seed" in err and "out_dir" in err
    # other prompts: other pairs behind the same file names, refused too
    assert _eval(trained_run, out, "prompts_per_subject=2") == 2
    assert "prompts_sha1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["metrics={identity: dino}"], "metrics.identity must be a mapping"),
        (["prompt_column=hps"], "prompt_column='hps' is not a metrics column"),
        (["protocol=dreambench"], "needs a FLUX policy"),
        (["metrics={x: {kind: nope}}"], "metrics.x.kind='nope' is not a registered reward"),
        (["metrics={x: {kind: colour, colour: red}}"], "has no option(s) ['colour']"),
        (["protcol=embedded"], "protcol"),
        (["metrics={file: {reward: embedded_prompt}}"], "fixed column"),
    ],
)
def test_eval_bad_settings_give_one_clear_error(
    tmp_path: Path,
    trained_run: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    needle: str,
) -> None:
    assert _eval(trained_run, tmp_path / "ev", "prompts_per_subject=1", *overrides) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_eval_needs_a_run_with_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--run", str(tmp_path), "--quiet"]) == 2
    assert "config.yaml" in capsys.readouterr().err


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="shared DreamBench folder not present")
def test_dreambench_protocol_with_flux_policy(tmp_path: Path, flux_dir: Path) -> None:
    """30 subjects, class-word prompts, offline identity column, on a tiny random FLUX."""
    policy = make_policy(flux_dir)
    train_cfg = load_config(
        TrainConfig, None, ["model.kind=flux", "flux.resolution=16", "sampler.num_steps=2"]
    )
    cfg = EvalConfig(protocol="dreambench", root=str(DREAMBENCH), prompts_per_subject=1)
    cfg.metrics = {"identity_offline": {"kind": "effnet", "resize": 64, "crop": 64}}
    metrics = build_metrics(cfg, "cpu", train_cfg)
    out = tmp_path / "db"
    result = evaluate_protocol(
        policy, train_cfg, cfg, metrics=metrics, out=out, source={"model": "tiny"}, quiet=True
    )
    assert result["images_per_pair"] == 1 and result["images"] == 30
    assert (result["pairs"], result["subjects"]) == (30, 30)
    assert result["identity_column"] == "identity_offline" and result["prompt_column"] == ""
    rows = _csv(out / "metrics.csv")
    classes = {r["subject"]: r["prompt_text"] for r in rows}
    assert "backpack" in classes["backpack"] and "dog" in classes["dog"]
    assert all("{" not in r["prompt_text"] for r in rows)
    vals = np.array([float(r["identity_offline"]) for r in rows])
    assert np.isfinite(vals).all() and ((vals >= 0) & (vals <= 1)).all()
    assert len(set(vals.round(6))) > 1


def test_base_model_eval_without_run(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    assert main(["eval", "--quiet", f"out_dir={out}", "prompts_per_subject=1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "base" and m["images"] == 8 * 4 and "base" not in m  # eval_noises 4


def test_paper_eval_config_loads_and_names_missing_weights(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(EvalConfig, root / "configs" / "eval_dreambench.yaml", [])
    assert list(cfg.metrics) == ["dino", "clip_i", "clip_t", "dino_seg", "hpsv3"]
    assert (cfg.identity_column, cfg.prompt_column) == ("dino_seg", "hpsv3")
    cfg.metrics = {"dino": {**cfg.metrics["dino"], "path": str(tmp_path / "nowhere")}}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_metrics(cfg, "cpu")


def test_eval_of_a_run_prints_the_training_table(tmp_path: Path) -> None:
    """One evaluator: training's held-out table and ``cgrpo eval --run R base=true`` of the
    final checkpoint print the same numbers (EMA weights, same pairs, noise, batches)."""
    from cgrpo.eval.summary import summary_table

    run = tmp_path / "run"
    shipped = Path(cgrpo.world.__file__).parent / "weights" / "base.safetensors"
    cfg = fast_config(run, shipped, "data.eval_noises=2", "optim.ema_decay=0.5")
    summary = GRPOTrainer(cfg).train(quiet=True)
    train_table = summary_table(summary["base"], summary["trained"], truth=summary["truth"])
    assert "gap closed" in train_table and "truth" in train_table
    out = tmp_path / "ev"
    text = eval_command(load_config(EvalConfig, None, [f"out_dir={out}", "base=true"]), run,
                        None, quiet=True)  # fmt: skip
    assert train_table in text
    assert "ema weights" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["per_image"] == summary["trained"]["per_image"]
    assert m["base"]["per_image"] == summary["base"]["per_image"]
    assert m["truth"] == summary["truth"]
    # the raw weights are other weights: other numbers
    raw = eval_command(
        load_config(EvalConfig, None, [f"out_dir={tmp_path / 'raw'}", "ema=false"]),
        run,
        None,
        quiet=True,
    )
    assert "raw weights" in raw
    raw_m = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    assert len(set(m["per_image"]["prompt"])) > 1  # real images, not a blank model
    assert raw_m["per_image"] != m["per_image"]
