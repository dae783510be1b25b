"""``cgrpo sample --run`` on a trained tiny FLUX run: the run's EMA weights, its sampler
settings and its reference preparation (here UNO's, the whole image resized: not the
square crop), checked against the trainer's own policy and the dataset's own references."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cgrpo.cli import main  # noqa: E402
from tests.conftest import PROMPTS, flux_train_config  # noqa: E402

NUM = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, flux_dir: Path):
    from PIL import Image

    from cgrpo.train.trainer import GRPOTrainer

    tmp = tmp_path_factory.mktemp("flux_sample")
    cfg = flux_train_config(
        flux_dir, tmp, "run.steps=2", "optim.ema_decay=0.5", "run.eval_steps=3",
        "sampler.shift=2.0", "flux.reference_preprocess=uno", "flux.uno_ref_size=32",
    )  # fmt: skip
    noisy = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp / "ref0.png")  # a pattern: its crop and whole image differ
    trainer = GRPOTrainer(cfg)
    trainer.train(quiet=True)
    return tmp / "run", trainer


def _expected(trainer, *, ema: bool) -> torch.Tensor:
    """The images the trained policy draws for pair 0's reference (as the dataset loads
    it) and both prompts: seed 0 noise, run.eval_steps steps at sampler.shift."""
    from cgrpo.run.build import build_data
    from cgrpo.sampling.rollout import sample_ode
    from cgrpo.sampling.sde import sigma_schedule

    policy, cfg = trainer.policy, trainer.cfg
    refs, prompts, _ = build_data(cfg).eval_pairs()
    assert prompts[0] == PROMPTS[0]
    one = refs[[0, 0]]  # pair 0's reference, once per image of a prompt
    noise = torch.randn(
        (2 * NUM, *policy.latent_shape()), generator=torch.Generator().manual_seed(0)
    )
    sigmas = sigma_schedule(3, 2.0)
    out = []
    with torch.no_grad(), trainer.ema_swapped() if ema else contextlib.nullcontext():
        for i, prompt in enumerate(PROMPTS):
            cond = policy.encode_condition(one, [prompt] * NUM)
            out.append(
                policy.decode(
                    sample_ode(policy, cond, sigmas, noise=noise[i * NUM : (i + 1) * NUM])
                )
            )
    return torch.cat(out)


def _sample(run: Path, out: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> torch.Tensor:
    """Run the command; returns the images it put in its grid."""
    import cgrpo.eval.sample as sample_mod

    seen = {}
    real = sample_mod.save_grid

    def spy(path, refs, images, *, group_size):  # noqa: ANN001, ANN202
        seen.update(refs=refs, images=images, group_size=group_size)
        return real(path, refs, images, group_size=group_size)

    monkeypatch.setattr(sample_mod, "save_grid", spy)
    ref = run.parent / "ref0.png"
    words = ["sample", "--run", str(run), "--reference", str(ref), "--num", str(NUM)]
    for p in PROMPTS:
        words += ["--prompt", p]
    assert main([*words, "--out", str(out), *args]) == 0
    assert seen["group_size"] == NUM and seen["images"].shape == (2 * NUM, 3, 16, 16)
    return seen["images"]


def test_sample_draws_the_runs_ema_model_with_its_sampler_and_references(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    run_dir, trainer = run
    images = _sample(run_dir, tmp_path / "s.png", monkeypatch)
    ema = _expected(trainer, ema=True)
    torch.testing.assert_close(images, ema, atol=1e-5, rtol=1e-4)
    raw = _sample(run_dir, tmp_path / "raw.png", monkeypatch, "--raw")
    torch.testing.assert_close(raw, _expected(trainer, ema=False), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(raw, ema, atol=1e-4)
    grid = np.asarray(Image.open(tmp_path / "s.png"))
    assert grid.shape == (2 * 16 * 16, (16 + 2 + NUM * 16) * 16, 3)  # 2 rows, x16 nearest
    # the grid's first tile is the reference as the rewards see it: its centre square
    from cgrpo.data.files import load_reference

    view = (load_reference(run_dir.parent / "ref0.png", 16) * 255).round().permute(1, 2, 0)
    assert np.array_equal(grid[::16, ::16][:16, :16], view.numpy().astype(np.uint8))


def test_sample_flux_inputs_refused_in_one_line(
    run, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, _ = run
    base = ["sample", "--run", str(run_dir), "--prompt", "a dog", "--out", str(tmp_path / "x.png")]
    cases = [
        (["--reference", "red-hstripes-circle"], "no such image file"),
        (["--reference", str(run_dir.parent / "ref0.png"), "--step", "9"], "--step 9"),
        (["--reference", str(run_dir.parent / "ref0.png"), "--weights", "w.st"], "drop --weights"),
    ]
    for args, text in cases:
        capsys.readouterr()
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("cgrpo sample: error: ") and text in err, err
    assert not (tmp_path / "x.png").exists()
