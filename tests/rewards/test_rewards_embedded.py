"""Tests of the download-free rewards (segmentation, embedded_identity, embedded_prompt).

Inputs come from the ground-truth renderer; the rewards themselves never call it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgrpo.rewards import RewardModel, make_reward
from cgrpo.rewards.embedded import (
    EmbeddedIdentityReward,
    EmbeddedPromptReward,
    segment_subject,
    subject_stats,
)
from cgrpo.world.scene import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    Prompt,
    Subject,
    all_subjects,
    random_prompt,
    reference_image,
    render,
)

SUBJECTS: list[Subject] = [s for split in all_subjects() for s in split]


@cache
def _render(subject: Subject, prompt: Prompt | None, size: int = 32) -> np.ndarray:
    return render(subject, prompt, size) if prompt is not None else reference_image(subject, size)


def batch(pairs: list[tuple[Subject, Prompt | None]], size: int = 32) -> torch.Tensor:
    """(B, 3, H, W) float32 tensor of renders; ``None`` prompt = the reference image."""
    arr = np.stack([_render(s, p, size) for s, p in pairs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def refs(subjects: list[Subject]) -> torch.Tensor:
    return batch([(s, None) for s in subjects])


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outranks a negative (ties count half)."""
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def true_coverage(subject: Subject, prompt: Prompt) -> np.ndarray:
    """Exact per-pixel coverage of the subject, from a white and a black render.

    A pixel is ``a * s + (1 - a) * bg``; the difference of the two renders is
    ``(1 - a) * (white - black)``.
    """
    pw = _render(subject, replace(prompt, background="white"))
    pb = _render(subject, replace(prompt, background="black"))
    span = np.asarray(BACKGROUNDS["white"]) - np.asarray(BACKGROUNDS["black"])
    return 1.0 - ((pw - pb) / span).mean(axis=-1)


@pytest.fixture(scope="module")
def identity() -> EmbeddedIdentityReward:
    return EmbeddedIdentityReward()


@pytest.fixture(scope="module")
def prompt_reward() -> EmbeddedPromptReward:
    return EmbeddedPromptReward()


@pytest.fixture(scope="module")
def random_rows() -> list[tuple[Subject, Prompt]]:
    rng = random.Random(1234)
    return [(s, random_prompt(s, rng)) for s in SUBJECTS for _ in range(12)]


# ----------------------------------------------------------------------------- registry


def test_registry_builds_both_rewards() -> None:
    ident = make_reward("embedded_identity")
    prompt = make_reward("embedded_prompt", tau_colour=0.04)
    assert isinstance(ident, EmbeddedIdentityReward) and ident.name == "embedded_identity"
    assert isinstance(prompt, EmbeddedPromptReward) and prompt.name == "embedded_prompt"
    assert prompt.tau_colour == 0.04
    assert isinstance(ident, RewardModel) and isinstance(prompt, RewardModel)


# ----------------------------------------------------------------------------- segmentation


@pytest.mark.parametrize("background", list(BACKGROUNDS))
def test_segmentation_matches_true_mask_on_every_background(background: str) -> None:
    rows = [
        (s, Prompt(s.shape, background, pos, size))
        for s in SUBJECTS
        for size in ("small", None, "large")
        for pos in ((None, "top left", "bottom right") if size != "large" else (None,))
    ]
    masks = segment_subject(batch(rows)) > 0.5
    cov = torch.from_numpy(np.stack([true_coverage(s, p) for s, p in rows])) > 0.5
    inter = (masks & cov).flatten(1).sum(1).float()
    union = (masks | cov).flatten(1).sum(1).float()
    iou = (inter / union).numpy()
    not_small = np.array([p.size != "small" for _, p in rows])
    assert iou.mean() >= 0.9, f"{background}: mean IoU {iou.mean():.3f}"
    assert iou[not_small].min() >= 0.75, f"{background}: worst IoU {iou[not_small].min():.3f}"
    assert iou.min() >= 0.5


@pytest.mark.parametrize("background", ["black", "grey", "white"])
def test_segmentation_keeps_dark_pattern_stripes(background: str) -> None:
    rows = [(s, Prompt(s.shape, background)) for s in SUBJECTS if s.pattern != "solid"]
    images = batch(rows)
    masks = segment_subject(images) > 0.5
    for i, (s, _) in enumerate(rows):
        dark = torch.tensor(COLOURS[s.colour]) * 0.5
        stripe = (images[i] - dark[:, None, None]).abs().amax(dim=0) < 1e-4
        assert stripe.sum() > 5
        kept = (masks[i] & stripe).sum() / stripe.sum()
        assert kept == 1.0, f"{s.name} on {background}: kept {kept:.2f} of the stripe pixels"


def test_segmentation_empty_and_closing() -> None:
    levels = torch.tensor([0.08, 0.55, 0.96]).view(3, 1, 1, 1)
    blank = levels.expand(3, 3, 32, 32)
    assert segment_subject(blank).max() < 0.01
    images = batch([(s, Prompt(s.shape, "grey")) for s in SUBJECTS[:8]])
    m, closed = segment_subject(images), segment_subject(images, close=True)
    assert torch.all(closed >= m - 1e-6)
    with pytest.raises(ValueError, match="images"):
        segment_subject(torch.zeros(2, 32, 32))


# ----------------------------------------------------------------------------- identity


def test_identity_ranks_same_subject_above_others(identity: EmbeddedIdentityReward) -> None:
    """AUC over all 32 subjects, random prompts without recolouring."""
    rng = random.Random(7)
    gen, ref, same = [], [], []
    for s in SUBJECTS:
        for _ in range(6):
            p = replace(random_prompt(s, rng), colour=None)
            others = rng.sample([o for o in SUBJECTS if o != s], 3)
            for r in [s, *others]:
                gen.append((s, p))
                ref.append(r)
                same.append(r == s)
    scores = identity(batch(gen), ["a circle"] * len(gen), refs(ref)).numpy()
    same_arr = np.array(same)
    value = auc(scores[same_arr], scores[~same_arr])
    assert value >= 0.95, f"AUC {value:.4f}"
    assert scores[same_arr].mean() > 0.9
    assert np.mean(scores[same_arr] > 0.8) > 0.95
    assert scores[~same_arr].mean() < 0.3


def test_identity_same_subject_other_layout_scores_high(
    identity: EmbeddedIdentityReward,
) -> None:
    rows = [
        (s, Prompt(s.shape, bg, pos, size))
        for s in SUBJECTS
        for bg, pos, size in (
            ("black", "top left", "small"),
            ("sky", None, "large"),
            (None, None, None),
        )
    ]
    scores = identity(batch(rows), ["a"] * len(rows), refs([s for s, _ in rows]))
    assert scores.mean() > 0.9
    assert scores.min() > 0.6
    unchanged = scores[2::3]  # the reference geometry itself
    assert torch.all(unchanged > 0.99)


def test_identity_different_shape_or_pattern_scores_lower(
    identity: EmbeddedIdentityReward,
) -> None:
    rng = random.Random(3)
    same, other_shape, other_pattern, ref = [], [], [], []
    for s in SUBJECTS:
        p = replace(random_prompt(s, rng), colour=None)
        shape = rng.choice([x for x in SHAPES if x != s.shape])
        pattern = rng.choice([x for x in PATTERNS if x != s.pattern])
        same.append((s, p))
        other_shape.append((Subject(shape, s.colour, s.pattern), replace(p, class_word=shape)))
        other_pattern.append((Subject(s.shape, s.colour, pattern), p))
        ref.append(s)
    r = refs(ref)
    prompts = ["a"] * len(ref)
    a = identity(batch(same), prompts, r)
    b = identity(batch(other_shape), prompts, r)
    c = identity(batch(other_pattern), prompts, r)
    assert (a > b).float().mean() >= 0.9 and a.mean() - b.mean() > 0.2
    assert torch.all(a > c) and a.mean() - c.mean() > 0.3


def test_recolouring_lowers_identity(identity: EmbeddedIdentityReward) -> None:
    rows, base = [], []
    for s in SUBJECTS:
        for colour in COLOURS:
            if colour != s.colour:
                rows.append((s, Prompt(s.shape, "grey", None, None, colour)))
                base.append((s, Prompt(s.shape, "grey")))
    r = refs([s for s, _ in rows])
    prompts = ["a"] * len(rows)
    recoloured = identity(batch(rows), prompts, r)
    unchanged = identity(batch(base), prompts, r)
    assert torch.all(recoloured < unchanged)
    assert recoloured.mean() < 0.35 and unchanged.mean() > 0.9


def test_identity_terms_and_dedup(identity: EmbeddedIdentityReward) -> None:
    rows = [(s, Prompt(s.shape, "mint", None, "small")) for s in SUBJECTS[:8] for _ in range(4)]
    images, r = batch(rows), refs([s for s, _ in rows])
    prompts = ["a"] * len(rows)
    terms = identity.terms(images, prompts, r)
    assert set(terms) == {"shape", "colour", "pattern", "presence"}
    for v in terms.values():
        assert v.shape == (len(rows),) and torch.all((v >= 0) & (v <= 1))
    plain = EmbeddedIdentityReward(dedup_references=False)
    torch.testing.assert_close(identity(images, prompts, r), plain(images, prompts, r))
    bbox = EmbeddedIdentityReward(crop="bbox")(images, prompts, r)
    assert bbox.mean() > 0.8


# ----------------------------------------------------------------------------- prompt


def test_ground_truth_follows_prompt(
    prompt_reward: EmbeddedPromptReward, random_rows: list[tuple[Subject, Prompt]]
) -> None:
    prompts = [p.text for _, p in random_rows]
    scores = prompt_reward(batch(random_rows), prompts, refs([s for s, _ in random_rows]))
    assert scores.mean() > 0.95, f"mean {scores.mean():.3f}"
    assert scores.min() > 0.75


def test_reference_copy_scores_low_when_prompt_asks_for_change(
    prompt_reward: EmbeddedPromptReward, random_rows: list[tuple[Subject, Prompt]]
) -> None:
    rows = [
        (s, p)
        for s, p in random_rows
        if p.background or p.colour or (p.position not in (None, "center"))
    ]
    assert len(rows) > 100
    prompts = [p.text for _, p in rows]
    r = refs([s for s, _ in rows])
    truth = prompt_reward(batch(rows), prompts, r)
    copy = prompt_reward(r, prompts, r)
    assert torch.all(truth - copy > 0.3)
    # a copy keeps presence (and, for orange <-> yellow, a bit of the colour term)
    assert copy.max() <= 0.65 and copy.mean() < 0.45
    assert truth.mean() > 0.95


def test_ignoring_an_attribute_costs_its_term(prompt_reward: EmbeddedPromptReward) -> None:
    rng = random.Random(11)
    for attr, value in (("background", "sand"), ("position", "top right"), ("colour", None)):
        rows, ignored = [], []
        for s in SUBJECTS:
            colour = rng.choice([c for c in COLOURS if c != s.colour])
            p = Prompt(s.shape, colour=colour) if attr == "colour" else Prompt(s.shape)
            if attr != "colour":
                p = replace(p, **{attr: value})
            rows.append((s, p))
            ignored.append(render(s, p, ignore=(attr,)))
        prompts = [p.text for _, p in rows]
        r = refs([s for s, _ in rows])
        bad = torch.from_numpy(np.stack(ignored)).permute(0, 3, 1, 2).contiguous()
        good_terms = prompt_reward.terms(batch(rows), prompts, r)
        bad_terms = prompt_reward.terms(bad, prompts, r)
        key = "placement" if attr == "position" else attr
        assert torch.all(good_terms[key] > 0.9), attr
        assert torch.all(bad_terms[key] < 0.2), attr


def test_recolour_conflict_between_the_two_rewards(
    identity: EmbeddedIdentityReward, prompt_reward: EmbeddedPromptReward
) -> None:
    """For a recolour prompt the ground truth wins on prompt and loses on identity."""
    rng = random.Random(5)
    rows = []
    for s in SUBJECTS:
        colour = rng.choice([c for c in COLOURS if c != s.colour])
        rows.append((s, Prompt(s.shape, None, None, None, colour)))
    prompts = [p.text for _, p in rows]
    r = refs([s for s, _ in rows])
    truth = batch(rows)
    p_truth, p_copy = prompt_reward(truth, prompts, r), prompt_reward(r, prompts, r)
    i_truth, i_copy = identity(truth, prompts, r), identity(r, prompts, r)
    assert torch.all(p_truth > p_copy + 0.3)
    assert torch.all(i_truth < i_copy - 0.1)
    assert p_truth.mean() > 0.95 and i_copy.mean() > 0.99
    assert i_truth.mean() < 0.35 and p_copy.mean() < 0.6


def test_placement_term_falls_as_subject_moves_away(prompt_reward: EmbeddedPromptReward) -> None:
    s = Subject("heart", "blue", "hstripes")
    p = Prompt("heart", "sand", "bottom left", "small")
    img = batch([(s, p)])
    shifts = [0, 1, 2, 4, 7]
    moved = torch.cat([torch.roll(img, shifts=(-k, k), dims=(2, 3)) for k in shifts])
    terms = prompt_reward.terms(moved, [p.text] * len(shifts), refs([s] * len(shifts)))
    placement = terms["placement"]
    assert placement[0] > 0.95
    assert torch.all(placement[1:] < placement[:-1])
    assert placement[-1] < 0.1
    for key in ("background", "size"):  # moving does not change the other attributes
        assert torch.all(terms[key] > 0.9)


def test_size_term_prefers_the_asked_size(prompt_reward: EmbeddedPromptReward) -> None:
    for s in SUBJECTS[::4]:
        sizes = ["small", None, "large"]
        images = batch([(s, Prompt(s.shape, size=z)) for z in sizes])
        prompt = Prompt(s.shape, size="small").text
        size = prompt_reward.terms(images, [prompt] * 3, refs([s] * 3))["size"]
        assert size[0] > 0.8 and size[0] > size[1] > size[2], (s.name, size)


def test_prompt_terms_are_nan_only_where_not_mentioned(
    prompt_reward: EmbeddedPromptReward,
) -> None:
    s = SUBJECTS[0]
    prompts = [Prompt(s.shape), Prompt(s.shape, "grey", "top left", "small", "blue")]
    images = batch([(s, p) for p in prompts])
    terms = prompt_reward.terms(images, [p.text for p in prompts], refs([s, s]))
    assert set(terms) == {"presence", "background", "placement", "size", "colour"}
    assert torch.isfinite(terms["presence"]).all()
    for key in ("background", "placement", "size", "colour"):
        assert torch.isnan(terms[key][0]) and torch.isfinite(terms[key][1]), key
    assert prompt_reward(images[:1], [prompts[0].text], refs([s]))[0] > 0.99


# ----------------------------------------------------------------------------- degenerate inputs


def test_noise_and_empty_images_score_low_on_both(
    identity: EmbeddedIdentityReward, prompt_reward: EmbeddedPromptReward
) -> None:
    gen = torch.Generator().manual_seed(0)
    rng = random.Random(2)
    rows = [(s, random_prompt(s, rng)) for s in SUBJECTS]
    prompts = [p.text for _, p in rows]
    r = refs([s for s, _ in rows])
    n = len(rows)
    cases = {"uniform noise": torch.rand(n, 3, 32, 32, generator=gen)}
    for name, colour in BACKGROUNDS.items():
        plain = torch.tensor(colour).view(1, 3, 1, 1).expand(n, 3, 32, 32)
        cases[f"blank {name}"] = plain.clone()
        noise = 0.15 * torch.randn(n, 3, 32, 32, generator=gen)
        cases[f"noisy blank {name}"] = (plain + noise).clamp(0, 1)
    for name, images in cases.items():
        ident, prompt = identity(images, prompts, r), prompt_reward(images, prompts, r)
        limit = 0.15 if name.startswith("noisy") else 0.02
        assert ident.max() < limit and prompt.max() < limit, (name, ident.max(), prompt.max())
        assert ident.mean() < 0.02 and prompt.mean() < 0.02, name


def test_mild_noise_keeps_ground_truth_high(
    identity: EmbeddedIdentityReward, prompt_reward: EmbeddedPromptReward
) -> None:
    rng = random.Random(9)
    rows = [(s, replace(random_prompt(s, rng), colour=None)) for s in SUBJECTS for _ in range(2)]
    prompts = [p.text for _, p in rows]
    images = batch(rows)
    noisy = (
        images + 0.02 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    ).clamp(0, 1)
    r = refs([s for s, _ in rows])
    assert identity(noisy, prompts, r).mean() > 0.9
    assert prompt_reward(noisy, prompts, r).mean() > 0.9


def test_other_resolutions(
    identity: EmbeddedIdentityReward, prompt_reward: EmbeddedPromptReward
) -> None:
    rng = random.Random(4)
    rows = [(s, replace(random_prompt(s, rng), colour=None)) for s in SUBJECTS]
    prompts = [p.text for _, p in rows]
    for size in (48, 64):
        images = batch(rows, size)
        r32 = refs([s for s, _ in rows])
        r_same = batch([(s, None) for s, _ in rows], size)
        for r in (r32, r_same):
            assert prompt_reward(images, prompts, r).mean() > 0.9, size
            assert identity(images, prompts, r).mean() > 0.85, size


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.sampled_from([16, 32, 40]),
    kind=st.sampled_from(["uniform", "blocks", "render"]),
)
def test_scores_are_finite_and_in_unit_range(seed: int, size: int, kind: str) -> None:
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    subjects = [rng.choice(SUBJECTS) for _ in range(3)]
    prompts = [random_prompt(s, rng).text for s in subjects]
    if kind == "uniform":
        images = torch.rand(3, 3, size, size, generator=gen)
    elif kind == "blocks":
        low = torch.rand(3, 3, 4, 4, generator=gen)
        images = torch.nn.functional.interpolate(low, size=(size, size), mode="nearest")
    else:
        images = batch([(s, random_prompt(s, rng)) for s in subjects], size)
    r = refs(subjects)
    for reward in (EmbeddedIdentityReward(), EmbeddedPromptReward()):
        out = reward(images, prompts, r)
        assert out.shape == (3,) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and torch.all((out >= 0) & (out <= 1))
    for t in EmbeddedPromptReward().terms(images, prompts, r).values():
        ok = torch.isnan(t) | ((t >= 0) & (t <= 1))
        assert ok.all()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("reward_cls", [EmbeddedIdentityReward, EmbeddedPromptReward])
def test_input_validation(reward_cls: type) -> None:
    reward = reward_cls()
    s = SUBJECTS[0]
    good = refs([s, s])
    prompts = ["a circle", "a circle"]
    reward(good, prompts, good)  # valid call
    bad_cases = [
        (good.permute(0, 2, 3, 1), prompts, good, "images"),
        (good[:, :2], prompts, good, "images"),
        (good, prompts, good[:1], "references"),
        (good, prompts, good[0], "references"),
        (good, prompts[:1], good, "prompts"),
        (good, "a circle", good, "prompts"),
        ((good * 255).to(torch.uint8), prompts, good, "dtype"),
        (good.numpy(), prompts, good, "images"),
    ]
    nan = good.clone()
    nan[0, 1, 3, 3] = float("nan")
    bad_cases.append((nan, prompts, good, "NaN"))
    bad_cases.append((good, prompts, nan, "NaN"))
    for images, ps, rs, match in bad_cases:
        with pytest.raises(ValueError, match=match):
            reward(images, ps, rs)
    with pytest.raises(ValueError, match="grammar"):
        EmbeddedPromptReward()(good, ["a purple elephant", "a circle"], good)


def test_subject_stats_geometry() -> None:
    s = Subject("square", "red", "solid")
    images = batch([(s, Prompt("square", "grey")), (s, None)])
    stats = subject_stats(images)
    assert torch.all(stats.present)
    centre = torch.tensor([16.0, 16.0])
    assert torch.allclose(stats.centroid, centre.expand(2, 2), atol=0.3)
    # a medium square has half-size 0.8 * 8.5 px: side 13.6 px, area 185 px
    assert abs(stats.area[0].item() * 1024 - 13.6**2) < 25
    torch.testing.assert_close(stats.colour[0], torch.tensor(COLOURS["red"]), atol=0.02, rtol=0)
    torch.testing.assert_close(stats.background[0], torch.tensor(BACKGROUNDS["grey"]))
    # top left: the centroid moves by the layout offset, 16 - 8.5 - 1.5 = 6 px per axis
    moved = subject_stats(batch([(s, Prompt("square", None, "top left"))]))
    offset = POSITIONS["top left"][0] * 6.0
    assert torch.allclose(moved.centroid[0], centre + offset, atol=0.3)


def test_colour_reward_from_the_registry() -> None:
    """The model-free smoke-test reward: brightness and red-minus-blue per image."""
    images = torch.zeros(3, 3, 4, 4)
    images[0] = 1.0  # white
    images[1, 0] = 1.0  # red
    images[2, 2] = 1.0  # blue
    bright = make_reward("colour", measure="brightness")(images, ["x"] * 3, images)
    red = make_reward("colour", measure="redness")(images, ["x"] * 3, images)
    torch.testing.assert_close(bright, torch.tensor([1.0, 1 / 3, 1 / 3]))
    torch.testing.assert_close(red, torch.tensor([0.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="brightness or redness"):
        make_reward("colour", measure="green")


def test_an_image_scores_the_same_in_any_batch(
    identity: EmbeddedIdentityReward,
    prompt_reward: EmbeddedPromptReward,
    random_rows: list[tuple[Subject, Prompt]],
) -> None:
    """A reward is per image: scoring one alone, or beside others (other sizes, so other
    'brightest quarter' counts), gives the same value. 8-bit images, as the evaluation reads
    them back, have many pixels of equal brightness, where a batch-wide top-k broke ties
    differently from one batch to the next."""
    rows = random_rows[:: len(random_rows) // 48][:48]
    noise = torch.Generator().manual_seed(0)
    images = batch(rows) + 0.05 * torch.randn(len(rows), 3, 32, 32, generator=noise)
    images = (images.clamp(0, 1) * 255).round() / 255  # 8-bit, as a saved PNG
    prompts = [p.text for _, p in rows]
    references = refs([s for s, _ in rows])
    for reward in (identity, prompt_reward):
        together = reward(images, prompts, references)
        alone = torch.cat([reward(images[i : i + 1], prompts[i : i + 1], references[i : i + 1])
                           for i in range(len(rows))])  # fmt: skip
        assert torch.allclose(together, alone, atol=1e-5, rtol=0), (together - alone).abs().max()
