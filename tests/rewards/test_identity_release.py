"""DINO-Seg as the paper's released code computes it, and our segmented crops seen once.

The release (Customized-GRPO, ``uno/reward/dino.py`` and ``train/train_customized_grpo.py``)
scores identity as ``100 * cos`` of the DINOv2 CLS tokens (``last_hidden_state[:, 0]``) of
the reference and the generated image, both through the folder's ``BitImageProcessor``
(dinov2-base: PIL bicubic resize of the shorter side to 256, centre crop 224, /255,
ImageNet mean/std). The reference is ``<ref>_seg.png`` when that file exists (a
pre-segmented reference), else the raw reference; the generated image is never segmented.
:func:`release_score` below re-implements that formula with PIL/numpy only, independently of
:mod:`cgrpo.rewards`, and the tests compare our ``dinov2`` reward with it on a tiny
random-weight DINOv2 that uses dinov2-base's preprocessing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgrpo.rewards import make_reward
from cgrpo.rewards.segment import crop_to_mask, paint_outside

transformers = pytest.importorskip("transformers")

DREAMBENCH = Path(
    os.environ.get(
        "CGRPO_DREAMBENCH", Path(__file__).resolve().parents[3] / "shared" / "data" / "dreambench"
    )
)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(scope="module")
def dinov2_base_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random DINOv2 (patch 14) with facebook/dinov2-base's preprocessor config."""
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        mlp_ratio=2,
        image_size=224,
        patch_size=14,
    )
    d = tmp_path_factory.mktemp("dinov2_base_like")
    transformers.Dinov2Model(cfg).eval().save_pretrained(d)
    proc = {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": MEAN.tolist(),
        "image_processor_type": "BitImageProcessor",
        "image_std": STD.tolist(),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 256},
    }
    (d / "preprocessor_config.json").write_text(json.dumps(proc))
    return d


# ----------------------------------------------------------------------------- the release


def _release_pixels(image: Image.Image) -> torch.Tensor:
    """BitImageProcessor of dinov2-base: shorter side 256 (PIL bicubic, longer side
    truncated), centre crop 224 (offsets floored), /255, ImageNet mean/std."""
    w, h = image.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    small = image.convert("RGB").resize((nw, nh), Image.BICUBIC)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    arr = np.asarray(small, dtype=np.float32)[top : top + 224, left : left + 224] / 255
    return torch.from_numpy((arr - MEAN) / STD).permute(2, 0, 1)[None]


def release_score(model: torch.nn.Module, reference: Image.Image, image: Image.Image) -> float:
    """``100 * cos(CLS(reference), CLS(image))``, CLS = ``last_hidden_state[:, 0]``."""
    with torch.no_grad():
        feats = [
            model(pixel_values=_release_pixels(x)).last_hidden_state for x in (reference, image)
        ]
    a, b = (f[:, 0] / f[:, 0].norm(dim=-1, keepdim=True) for f in feats)
    return 100 * (a * b).sum().item()


def _tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1], the same 8-bit pixels the release reads."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _synthetic(seed: int, size: tuple[int, int] = (512, 512)) -> Image.Image:
    """A smooth random colour image (low-frequency noise upsampled), 8-bit."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8))
    return low.resize(size, Image.BILINEAR)


def _pairs() -> list[tuple[Image.Image, Image.Image]]:
    pairs = [(_synthetic(1), _synthetic(2)), (_synthetic(3, (400, 520)), _synthetic(4))]
    if (DREAMBENCH / "single_reference.json").is_file():
        for ref, gen in (("dog/02.jpg", "dog/03.jpg"), ("backpack/02.jpg", "cat/01.jpg")):
            pairs.append((Image.open(DREAMBENCH / ref), Image.open(DREAMBENCH / gen)))
    return [(a.convert("RGB"), b.convert("RGB")) for a, b in pairs]


def test_dinov2_x100_equals_the_release_formula(dinov2_base_like: Path) -> None:
    """Raw references (the release's fallback when no ``_seg.png`` exists, and its
    DreamBench evaluation), and pre-segmented references given as they are."""
    model = transformers.Dinov2Model.from_pretrained(dinov2_base_like).eval()
    r = make_reward("dinov2", path=str(dinov2_base_like), device="cpu", scale=100.0)
    assert (r.resize, r.crop, r.pooling) == (256, 224, "cls")
    for reference, image in _pairs():
        want = release_score(model, reference, image)
        got = r(_tensor(image), ["p"], _tensor(reference)).item()
        # PIL bicubic on 8-bit pixels vs torch antialiased bicubic on floats, and a longer
        # side rounded rather than truncated: ~4e-4 in cosine
        assert got == pytest.approx(want, abs=0.05), (reference.size, want, got)
        assert want < 99.9  # different images: the comparison is not trivially 100


def _square_mask(h: int, w: int) -> torch.Tensor:
    """A subject mask: a disc of radius h/5 at (0.55 h, 0.4 w)."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((yy - 0.55 * h) ** 2 + (xx - 0.4 * w) ** 2 < (h / 5) ** 2).float()


def test_release_mode_matches_a_pre_segmented_reference(dinov2_base_like: Path) -> None:
    """``seg_mode: reference`` + ``seg_crop: frame`` with a segmenter = the release scoring a
    ``_seg.png`` made from the same mask (subject on white, whole frame)."""
    model = transformers.Dinov2Model.from_pretrained(dinov2_base_like).eval()
    reference, image = _synthetic(5), _synthetic(6)
    mask = _square_mask(512, 512)
    seen: list[int] = []

    def oracle(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return mask.expand(x.shape[0], -1, -1)

    m = mask.numpy()[..., None]
    seg_png = Image.fromarray(
        np.round(np.asarray(reference, dtype=np.float32) * m + 255 * (1 - m)).astype(np.uint8)
    )
    want = release_score(model, seg_png, image)
    opts = {"path": str(dinov2_base_like), "device": "cpu", "scale": 100.0, "segmenter": oracle}
    frame = make_reward("dinov2", seg_mode="reference", seg_crop="frame", **opts)
    got = frame(_tensor(image), ["p"], _tensor(reference)).item()
    # the subject's sharp edge rings differently in PIL's 8-bit and torch's float bicubic:
    # ~1e-3 in cosine; the other geometries below are > 5 points away
    assert got == pytest.approx(want, abs=0.25)
    assert seen == [1]  # the reference only; the generated image is encoded whole
    # the other geometries are measurably different rewards
    box = make_reward("dinov2", seg_mode="reference", **opts)(
        _tensor(image), ["p"], _tensor(reference)
    )
    both = make_reward("dinov2", seg_crop="frame", **opts)(
        _tensor(image), ["p"], _tensor(reference)
    )
    assert abs(box.item() - want) > 5 and abs(both.item() - want) > 5
    with pytest.raises(ValueError, match="seg_crop must be 'box' or 'frame'"):
        make_reward("dinov2", seg_crop="tight", **opts)


def _seen_pixels(reward: object) -> list[torch.Tensor]:
    """Record, un-normalised to [0, 1], every input the reward's model sees."""
    seen: list[torch.Tensor] = []
    mean = torch.tensor(MEAN)[None, :, None, None]
    std = torch.tensor(STD)[None, :, None, None]

    def hook(_module, _args, kwargs) -> None:
        seen.append(kwargs["pixel_values"].float() * std + mean)

    reward.model.register_forward_pre_hook(hook, with_kwargs=True)  # type: ignore[attr-defined]
    return seen


def test_segmented_crop_is_seen_by_the_model_once(dinov2_base_like: Path) -> None:
    """A box crop made at the model's input size reaches the model pixel for pixel; one
    made at another size is resampled to it whole (not resized and centre-cropped again)."""
    g = torch.Generator().manual_seed(7)
    reference = torch.rand(1, 3, 300, 260, generator=g)
    mask = _square_mask(300, 260)[None]
    opts = {"path": str(dinov2_base_like), "device": "cpu", "segmenter": lambda x: mask}
    r = make_reward("dinov2", seg_mode="reference", **opts)
    seen = _seen_pixels(r)
    r(torch.rand(1, 3, 64, 64, generator=g), ["p"], reference)
    crop = crop_to_mask(reference, mask, 224, threshold=0.5, margin=0.05)
    assert seen[1].shape == (1, 3, 224, 224)  # seen[0]: the generated image
    torch.testing.assert_close(seen[1], crop, atol=1e-5, rtol=0)

    small = make_reward("dinov2", seg_mode="reference", crop_size=112, **opts)
    seen = _seen_pixels(small)
    small(torch.rand(1, 3, 64, 64, generator=g), ["p"], reference)
    half = crop_to_mask(reference, mask, 112, threshold=0.5, margin=0.05)

    def subject_cols(x: torch.Tensor) -> tuple[int, int]:
        cols = ((x[0] - 1).abs().amax(dim=0) > 0.05).any(dim=0).nonzero()[:, 0]
        return int(cols.min()), int(cols.max()) + 1

    lo, hi = subject_cols(half)
    lo2, hi2 = subject_cols(seen[1])
    # the 5 % white margin survives: scaled by 2, not by 2 x 256 / 224 and cut
    assert abs(lo2 - 2 * lo) <= 2 and abs(hi2 - 2 * hi) <= 2 and lo2 > 0


def test_paint_outside_keeps_the_frame() -> None:
    img = torch.full((2, 3, 6, 5), 0.2)
    masks = torch.zeros(2, 6, 5)
    masks[0, 1:3, 2:4] = 1.0
    masks[0, 4, 0] = 0.25  # soft edge below the threshold: blended, not cut
    out = paint_outside(img, masks)
    assert out.shape == img.shape
    assert torch.allclose(out[0, :, 1:3, 2:4], torch.full((3, 2, 2), 0.2))
    assert out[0, 0, 0, 0] == 1.0 and out[0, 0, 4, 0] == pytest.approx(0.2 * 0.25 + 0.75)
    assert torch.equal(out[1], img[1])  # empty mask: unchanged
    hard = paint_outside(img, masks, soft=False)
    assert hard[0, 0, 4, 0] == 1.0
    with pytest.raises(ValueError, match="masks must have shape"):
        paint_outside(img, masks[:, :5])
