"""The embedded world: subjects, prompts, renderer, generator, pretraining, base weights."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cgrpo.world import scene
from cgrpo.world.generator import TinyKontext, Tokenizer
from cgrpo.world.pretrain import (
    DEFAULT_WEIGHTS,
    PretrainConfig,
    load_generator,
    make_batch,
    pretrain,
    save_generator,
)
from tests.conftest import TINY


def test_subject_split() -> None:
    train, held = scene.all_subjects()
    assert len(train) == 24 and len(held) == 8
    assert not set(train) & set(held)
    for attr, values in (
        ("shape", scene.SHAPES),
        ("colour", scene.COLOURS),
        ("pattern", scene.PATTERNS),
    ):
        assert {getattr(s, attr) for s in train} == set(values)
    assert {s.shape for s in held} == set(scene.SHAPES)
    assert scene.all_subjects() == (train, held)  # fixed


def test_prompt_text_round_trip() -> None:
    rng = random.Random(0)
    train, _ = scene.all_subjects()
    seen = set()
    for _ in range(500):
        s = rng.choice(train)
        p = scene.random_prompt(s, rng)
        assert scene.parse_prompt(p.text) == p
        assert p.colour != s.colour
        assert not (p.size == "large" and p.position)
        seen |= set(p.attributes())
    assert seen == {"background", "position", "size", "colour"}
    with pytest.raises(ValueError, match="grammar"):
        scene.parse_prompt("a dog on the beach")
    with pytest.raises(ValueError, match="unknown subject"):
        scene.subject_by_name("red-star")


def test_render_follows_prompt() -> None:
    s = scene.Subject("star", "red", "hstripes")
    ref = scene.reference_image(s)
    assert ref.shape == (32, 32, 3) and ref.min() >= 0 and ref.max() <= 1
    assert np.allclose(ref[0, 0], scene.BACKGROUNDS["white"])
    sky = scene.render(s, scene.Prompt("star", background="sky"))
    assert np.allclose(sky[0, 0], scene.BACKGROUNDS["sky"])
    blue = scene.render(s, scene.Prompt("star", colour="blue"))
    assert blue[..., 2].sum() > ref[..., 2].sum() + 20
    # copy-biased target: the recolour is ignored
    copied = scene.render(s, scene.Prompt("star", colour="blue"), ignore=("colour",))
    np.testing.assert_allclose(copied, ref)
    # placement moves the subject's centre of mass
    tl = scene.render(s, scene.Prompt("star", position="top left"))
    mask = np.abs(tl - np.asarray(scene.BACKGROUNDS["white"])).sum(-1) > 0.3
    ys, xs = np.nonzero(mask)
    assert ys.mean() < 14 and xs.mean() < 14


def test_tokenizer() -> None:
    tok = Tokenizer()
    ids = tok(["a small red star in the top left on a sky background", "a star"])
    assert ids.shape == (2, 14) and (ids[1, 2:] == 0).all() and (ids[0] != 0).sum() == 12
    with pytest.raises(ValueError, match="'dog' is not in the embedded vocabulary"):
        tok(["a dog"])


def test_generator_shapes_and_conditioning() -> None:
    torch.manual_seed(0)
    model = TinyKontext(TINY)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    for block in model.blocks:
        torch.nn.init.normal_(block.ada.weight, std=0.1)
    x = torch.randn(2, 3, 32, 32)
    ids = Tokenizer()(["a star", "a star"])
    ref = torch.randn(2, 3, 32, 32)
    v = model(x, torch.tensor([0.5, 0.5]), ids, reference=ref)
    assert v.shape == x.shape
    # the velocity depends on the reference tokens and on the prompt
    v_ref = model(x, torch.tensor([0.5, 0.5]), ids, reference=ref.flip(0))
    assert not torch.allclose(v, v_ref)
    v_txt = model(x, torch.tensor([0.5, 0.5]), Tokenizer()(["a red star", "a star"]), reference=ref)
    assert not torch.allclose(v[0], v_txt[0]) and torch.allclose(v[1], v_txt[1], atol=1e-6)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = TinyKontext(TINY)
    save_generator(model, tmp_path / "g.safetensors")
    again = load_generator(tmp_path / "g.safetensors")
    assert again.config == TINY
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a.half().float(), b, msg=k)
    with pytest.raises(FileNotFoundError, match="cgrpo pretrain"):
        load_generator(tmp_path / "nope.safetensors")


def test_pretrain_lowers_the_loss(tmp_path: Path) -> None:
    out = tmp_path / "base.safetensors"
    cfg = PretrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=5, out=str(out), model=TINY)
    cfg.log_every = 1000
    pretrain(cfg)
    model = load_generator(out)
    rng = random.Random(1)
    train, _ = scene.all_subjects()
    prompts, refs, x0 = make_batch(rng, train, 32, cfg=cfg)
    gen = torch.Generator().manual_seed(0)
    sigma = torch.rand(32, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    s = sigma[:, None, None, None]
    xt = (1 - s) * x0 + s * noise
    tok = Tokenizer()
    with torch.no_grad():
        trained = (model(xt, sigma, tok(prompts), reference=refs) - (noise - x0)).pow(2).mean()
        fresh = (
            (TinyKontext(TINY)(xt, sigma, tok(prompts), reference=refs) - (noise - x0))
            .pow(2)
            .mean()
        )
    assert trained < 0.8 * fresh


def test_shipped_base_weights_load() -> None:
    assert DEFAULT_WEIGHTS.is_file(), "the package must ship its base generator"
    model = load_generator()
    assert sum(p.numel() for p in model.parameters()) > 500_000
    assert DEFAULT_WEIGHTS.stat().st_size < 8 * 2**20


def test_eval_truth_is_the_rendered_prompt() -> None:
    """The held-out ground truth: the renderer's image of each pair's prompt, scored high
    by the embedded rewards (the reference is not the answer when the prompt recolours)."""
    import torch

    from cgrpo.data.base import EmbeddedData
    from cgrpo.rewards import make_reward

    data = EmbeddedData(eval_prompts_per_subject=4)
    refs, prompts, names = data.eval_pairs()
    truth = data.eval_truth()
    assert truth.shape == refs.shape
    i = 5
    want = scene.render(scene.subject_by_name(names[i]), scene.parse_prompt(prompts[i]))
    assert torch.equal(truth[i], torch.from_numpy(want).permute(2, 0, 1))
    prompt = make_reward("embedded_prompt")(truth, prompts, refs)
    copy = make_reward("embedded_prompt")(refs, prompts, refs)
    assert float(prompt.mean()) > 0.9 and float(prompt.mean()) > float(copy.mean())
