"""``cgrpo export``: a trained FLUX run's LoRA as diffusers or UNO safetensors + model card.

Two tiny random FLUX runs are trained for 2 steps (EMA on): a Kontext one (the default
``diffusers_all`` LoRA, alpha != rank) and a UNO one (UNO's LoRA preset on top of a
UNO-format starting LoRA). Each exported file is loaded by another reader than ours
(diffusers' ``load_lora_weights``; for the UNO format also our ``flux.start_lora``, which
reads it through diffusers' XLabs converter) and must give the trained policy's velocity.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cgrpo.cli import main  # noqa: E402
from tests.conftest import PROMPTS, flux_train_config  # noqa: E402
from tests.policies.test_flux_policy import make_policy, refs  # noqa: E402

D = 32  # the tiny transformer's width (2 heads x 16)
MLP = 4 * D  # its MLP width (mlp_ratio 4)
START_RANK = 2


def unos_set_lora_shapes(
    rank: int, *, hidden: int, mlp_hidden: int, depth: int, single: int
) -> dict[str, tuple[int, int]]:
    """The LoRA keys and shapes UNO's ``set_lora(model, rank)`` creates (uno/flux/util.py,
    uno/flux/modules/layers.py): each double block's ``DoubleStreamBlockLoraProcessor``
    holds ``qkv_lora1/2 = LoRALinearLayer(dim, 3 dim)`` and ``proj_lora1/2 =
    LoRALinearLayer(dim, dim)``, each single block's ``SingleStreamBlockLoraProcessor``
    ``qkv_lora = LoRALinearLayer(dim, 3 dim)`` and ``proj_lora = LoRALinearLayer(15360,
    dim)``, 15360 being FLUX.1-dev's ``dim + mlp_hidden`` (UNO writes the number; here the
    tiny model's sum). ``LoRALinearLayer(in, out)``: ``down`` (rank x in), ``up`` (out x rank);
    the processor is the block's ``processor`` attribute."""
    layers = {}
    for n in range(depth):
        for name, n_in, n_out in [
            ("qkv_lora1", hidden, 3 * hidden),
            ("proj_lora1", hidden, hidden),
            ("qkv_lora2", hidden, 3 * hidden),
            ("proj_lora2", hidden, hidden),
        ]:
            layers[f"double_blocks.{n}.processor.{name}"] = (n_in, n_out)
    for n in range(single):
        layers[f"single_blocks.{n}.processor.qkv_lora"] = (hidden, 3 * hidden)
        layers[f"single_blocks.{n}.processor.proj_lora"] = (hidden + mlp_hidden, hidden)
    shapes = {}
    for key, (n_in, n_out) in layers.items():
        shapes[f"{key}.down.weight"] = (rank, n_in)
        shapes[f"{key}.up.weight"] = (n_out, rank)
    return shapes


def test_unos_table_has_unos_numbers_on_flux_dev() -> None:
    dev = unos_set_lora_shapes(512, hidden=3072, mlp_hidden=4 * 3072, depth=19, single=38)
    assert dev["single_blocks.37.processor.proj_lora.down.weight"] == (512, 15360)
    assert len(dev) == 2 * (19 * 4 + 38 * 2)
    assert sum(a * b for a, b in dev.values()) == 956_301_312  # the uno preset's count


def _start_lora(path: Path) -> Path:
    """A random LoRA in UNO's dit_lora layout on the tiny model (rank 2)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(11)
    shapes = unos_set_lora_shapes(START_RANK, hidden=D, mlp_hidden=MLP, depth=1, single=1)
    save_file({k: torch.randn(s, generator=g) * 0.3 for k, s in shapes.items()}, str(path))
    return path


def _train(flux_dir: Path, tmp: Path, *overrides: str):
    from cgrpo.train.trainer import GRPOTrainer

    cfg = flux_train_config(flux_dir, tmp, "run.steps=2", "optim.ema_decay=0.5", *overrides)
    trainer = GRPOTrainer(cfg)
    trainer.train(quiet=True)
    return tmp / "run", trainer


@pytest.fixture(scope="module")
def kontext_run(tmp_path_factory: pytest.TempPathFactory, flux_dir: Path):
    tmp = tmp_path_factory.mktemp("kontext")
    return _train(flux_dir, tmp, "flux.position_scheme=kontext", "flux.lora_alpha=2")


@pytest.fixture(scope="module")
def uno_run(tmp_path_factory: pytest.TempPathFactory, flux_dir: Path):
    tmp = tmp_path_factory.mktemp("uno")
    start = _start_lora(tmp / "dit_lora.safetensors")
    return _train(
        flux_dir, tmp, "flux.lora_preset=uno", "flux.lora_alpha=8", f"flux.start_lora={start}"
    )


def _velocities(trainer):
    """(EMA velocity, raw velocity) of the trained policy on fixed inputs."""
    policy = trainer.policy
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, *policy.latent_shape(), generator=g)
    sigma = torch.tensor([0.8, 0.35])
    cond = policy.encode_condition(refs(), PROMPTS)
    with torch.no_grad():
        raw = policy.velocity(x, sigma, cond)
        with trainer.ema_swapped():
            ema = policy.velocity(x, sigma, cond)
    return (x, sigma, cond), ema, raw


def _export(run: Path, out: Path, *args: str) -> Path:
    assert main(["export", "--run", str(run), "--out", str(out), *args]) == 0
    return out


def test_diffusers_export_loads_in_kontext_pipeline_with_the_ema_velocity(
    kontext_run, tmp_path: Path, flux_dir: Path
) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline

    from cgrpo.policies.random_flux import random_flux

    run, trainer = kontext_run
    (x, sigma, cond), ema, raw = _velocities(trainer)
    assert not torch.allclose(ema, raw, atol=1e-4)  # EMA and raw weights differ
    stock = make_policy(flux_dir, position_scheme="kontext")
    for args, want in [((), ema), (("--raw",), raw)]:
        out = _export(run, tmp_path / f"lora{len(args)}.safetensors", *args)
        pipe = FluxKontextPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(), **random_flux("tiny")
        )
        pipe.load_lora_weights(str(out))
        stock.transformer = pipe.transformer
        with torch.no_grad():
            torch.testing.assert_close(stock.velocity(x, sigma, cond), want, atol=1e-5, rtol=1e-4)


def test_diffusers_export_of_a_uno_run_stacks_on_its_start_lora(
    uno_run, tmp_path: Path, flux_dir: Path
) -> None:
    """The diffusers file holds the trained LoRA only: with the run's starting LoRA loaded
    as a second adapter (as the card says) FluxPipeline gives the trained velocity."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from cgrpo.policies.random_flux import random_flux

    run, trainer = uno_run
    (x, sigma, cond), ema, _ = _velocities(trainer)
    out = _export(run, tmp_path / "lora.safetensors")
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), **random_flux("tiny"))
    pipe.load_lora_weights(trainer.cfg.flux.start_lora, adapter_name="start")
    pipe.load_lora_weights(str(out), adapter_name="cgrpo")
    pipe.set_adapters(["start", "cgrpo"], adapter_weights=[1.0, 1.0])
    stock = make_policy(flux_dir)
    stock.transformer = pipe.transformer
    with torch.no_grad():
        torch.testing.assert_close(stock.velocity(x, sigma, cond), ema, atol=1e-5, rtol=1e-4)
    card = (tmp_path / "README.md").read_text()
    assert 'adapter_name="start"' in card and "NOT in this file" in card


def test_uno_export_has_unos_keys_and_is_the_whole_trained_model(
    uno_run, tmp_path: Path, flux_dir: Path
) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from safetensors import safe_open

    from cgrpo.policies.random_flux import random_flux

    run, trainer = uno_run
    (x, sigma, cond), ema, _ = _velocities(trainer)
    out = _export(run, tmp_path / "uno.safetensors", "--format", "uno")
    with safe_open(str(out), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    rank = START_RANK + 4  # the start LoRA's rank + the trained one's
    assert shapes == unos_set_lora_shapes(rank, hidden=D, mlp_hidden=MLP, depth=1, single=1)
    assert meta["lora_rank"] == str(rank) and "lora_alpha" not in meta  # UNO's scale is 1
    # read back as a starting LoRA (diffusers' XLabs conversion, then merged): the base
    # model with it merged is the trained policy
    merged = make_policy(flux_dir, start_lora=str(out))
    with torch.no_grad():
        v = merged.reference_velocity(x, sigma, cond)
    torch.testing.assert_close(v, ema, atol=1e-5, rtol=1e-4)
    # and diffusers' load_lora_weights reads it as it is
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), **random_flux("tiny"))
    pipe.load_lora_weights(str(out))
    merged.transformer = pipe.transformer
    with torch.no_grad():
        torch.testing.assert_close(merged.velocity(x, sigma, cond), ema, atol=1e-5, rtol=1e-4)


def test_model_card_states_base_rewards_method_steps_eval_and_command(
    uno_run, tmp_path: Path
) -> None:
    import json

    run, trainer = uno_run
    out = _export(run, tmp_path / "card" / "uno.safetensors", "--format", "uno", "--step", "2")
    text = (tmp_path / "card" / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["base_model"] == "black-forest-labs/FLUX.1-dev"
    assert front["library_name"] == "diffusers" and front["license"] == "other"
    assert {"lora", "flux", "customized-grpo", "uno"} <= set(front["tags"])
    assert "| identity | colour | 1.0 | measure=brightness |" in text
    assert "| prompt | colour | 1.0 | measure=redness |" in text
    assert "reward shaping kind=sars, gamma=0.4" in text
    assert "time-dependent weighting kind=tdw" in text
    assert "steps trained: 2 (run.steps 2)" in text
    assert "EMA weights of checkpoint step 2" in text and "rank 6" in text
    ev = json.loads((run / "eval.json").read_text())
    b, t = ev["base"]["overall"]["identity"], ev["trained"]["overall"]["identity"]
    assert f"| identity | {b:.4f} | {t:.4f} | {t - b:+.4f} |" in text
    command = f"cgrpo export --run {run} --format uno --step 2 --out {out}"
    assert command in text and "lora_rank=6" in text
    assert trainer.cfg.flux.start_lora in text and "included in this file" in text


def test_export_refusals_are_one_line(
    kontext_run, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cgrpo.config.core import load_config, save_config
    from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig

    run, _ = kontext_run
    embedded = tmp_path / "embedded"
    save_config(load_config(TrainConfig, EMBEDDED_CONFIG, []), embedded / "config.yaml")
    cases = [
        (["--run", str(run), "--format", "uno"], "has no place there.*--format diffusers"),
        (
            ["--run", str(run), "--step", "7"],
            r"--step 7: .* no complete checkpoint .*\(steps: (1, )?2\)",
        ),
        (["--run", str(embedded)], "writes a FLUX run's LoRA"),
        (["--run", str(tmp_path)], "no config.yaml there"),
    ]
    for args, pattern in cases:
        capsys.readouterr()
        assert main(["export", *args, "--out", str(tmp_path / "x.safetensors")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("cgrpo export: error: "), err
        assert re.search(pattern, err), err
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x.bin")]) == 2
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "README.md").exists()
