"""Code paths of the real-photo reward backends, with tiny random-weight models (no downloads).

Each model is built from a tiny config here, saved with ``save_pretrained`` to ``tmp_path``
and loaded back through the backend's real constructor (``make_reward(name, path=...)``).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cgrpo.io.images import load_image, resize_center_crop
from cgrpo.rewards import REWARDS, make_reward
from cgrpo.rewards.hf import check_hf_folder, pooled
from cgrpo.rewards.hpsv3 import HPSv3Error
from cgrpo.rewards.images import EmbeddingCache
from cgrpo.rewards.segment import SEGMENTERS, crop_to_mask, make_segmenter, mask_boxes

transformers = pytest.importorskip("transformers")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=32,
        patch_size=8,
    )
    d = tmp_path_factory.mktemp("dinov2")
    transformers.Dinov2Model(cfg).eval().save_pretrained(d)
    # the processor config decides the preprocessing: resize 40, crop 32
    (d / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"shortest_edge": 40},
                "crop_size": {"height": 32, "width": 32},
                "do_center_crop": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
            }
        )
    )
    return d


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    d = tmp_path_factory.mktemp("dino")
    transformers.ViTModel(cfg, add_pooling_layer=False).eval().save_pretrained(d)
    return d


def _tiny_tokenizer() -> object:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    tok = _tiny_tokenizer()
    text = transformers.CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = transformers.CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    d = tmp_path_factory.mktemp("clip")
    transformers.CLIPModel(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}})
    )
    return d


def _images(n: int, seed: int, h: int = 48, w: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_real_backends() -> None:
    make_reward("embedded_identity")  # triggers the lazy imports
    for name in ("dinov2", "dino", "clip", "hpsv3", "effnet"):
        assert name in REWARDS


# ----------------------------------------------------------------------------- dinov2


def test_dinov2_matches_direct_model_and_is_batched(dinov2_dir: Path) -> None:
    r = make_reward("dinov2", path=str(dinov2_dir), device="cpu")
    assert (r.resize, r.crop) == (40, 32)
    imgs, refs = _images(4, 0), _images(4, 1, 64, 64)
    s = r(imgs, ["p"] * 4, refs)
    assert s.shape == (4,) and s.dtype == torch.float32

    # reference computation straight from the model + the documented preprocessing
    model = transformers.Dinov2Model.from_pretrained(dinov2_dir).eval()
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]

    def cls(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            x, scale_factor=None, size=_resized(x, 40), mode="bicubic", antialias=True
        )
        x = _centre(x, 32)
        with torch.no_grad():
            return model(pixel_values=(x - mean) / std).pooler_output

    want = F.cosine_similarity(cls(imgs), cls(refs), dim=-1)
    torch.testing.assert_close(s, want, atol=1e-5, rtol=1e-4)

    # one at a time == batched; x100 scaling; identical image scores 1
    one = torch.cat([r(imgs[i : i + 1], ["p"], refs[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(one, s, atol=1e-5, rtol=1e-4)
    r100 = make_reward("dinov2", path=str(dinov2_dir), device="cpu", scale=100.0)
    torch.testing.assert_close(r100(imgs, ["p"] * 4, refs), 100 * s, atol=1e-3, rtol=1e-4)
    same = r(refs, ["p"] * 4, refs)
    torch.testing.assert_close(same, torch.ones(4), atol=1e-5, rtol=0)
    assert (s < 0.9999).all()


def _resized(x: torch.Tensor, shorter: int) -> tuple[int, int]:
    h, w = x.shape[-2:]
    k = shorter / min(h, w)
    return round(h * k), round(w * k)


def _centre(x: torch.Tensor, c: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    t, l = (h - c) // 2, (w - c) // 2
    return x[..., t : t + c, l : l + c]


def test_dinov2_pooling_options(dinov2_dir: Path) -> None:
    imgs, refs = _images(2, 3), _images(2, 4)
    for pooling in ("mean", "cls+mean"):
        r = make_reward("dinov2", path=str(dinov2_dir), device="cpu", pooling=pooling)
        s = r(imgs, ["a", "b"], refs)
        assert s.shape == (2,) and torch.isfinite(s).all() and (s.abs() <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="pooling"):
        make_reward("dinov2", path=str(dinov2_dir), pooling="max")


def test_reference_embeddings_are_computed_once_per_unique_reference(dinov2_dir: Path) -> None:
    r = make_reward("dinov2", path=str(dinov2_dir), device="cpu")
    calls: list[int] = []
    encode = r.encode

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return encode(x)

    r.encode = counting  # type: ignore[method-assign]
    subjects = _images(2, 5, 64, 64)
    refs = subjects[[0, 0, 0, 1, 1, 1]]  # G = 3 samples per subject
    imgs = _images(6, 6)
    s1 = r(imgs, ["x"] * 6, refs)
    assert r.encoded_references == 2 and calls == [6, 2]  # images, then 2 unique references
    s2 = r(imgs, ["x"] * 6, refs.clone())  # same content, new tensor: cache hit
    assert r.encoded_references == 2 and calls == [6, 2, 6]
    torch.testing.assert_close(s1, s2)
    r(imgs[:2], ["x"] * 2, _images(2, 7, 64, 64))  # two new references
    assert r.encoded_references == 4 and r.cache.hits == 2 and len(r.cache) == 4


# ----------------------------------------------------------------------------- dino


def test_dino_uses_dreambench_preprocessing(vit_dir: Path) -> None:
    r = make_reward("dino", path=str(vit_dir), device="cpu")
    assert (r.resize, r.crop) == (256, 224)
    imgs, refs = _images(3, 8, 64, 80), _images(3, 9, 72, 72)
    s = r(imgs, ["a"] * 3, refs)

    model = transformers.ViTModel.from_pretrained(vit_dir, add_pooling_layer=False).eval()

    def cls(x: torch.Tensor) -> torch.Tensor:
        x = resize_center_crop(x, 256, 224)
        mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
        with torch.no_grad():
            out = model(pixel_values=(x - mean) / std, interpolate_pos_encoding=True)
        return out.last_hidden_state[:, 0]

    want = F.cosine_similarity(cls(imgs), cls(refs), dim=-1)
    torch.testing.assert_close(s, want, atol=1e-5, rtol=1e-4)
    assert r.model.pooler is None


# ----------------------------------------------------------------------------- clip


def test_clip_t_matches_direct_model_and_caches_prompts(clip_dir: Path) -> None:
    r = make_reward("clip", path=str(clip_dir), mode="text", device="cpu")
    prompts = ["a dog", "a red backpack", "a dog", "a dog on the beach"]
    imgs = _images(4, 10)
    s = r(imgs, prompts, None)
    assert s.shape == (4,) and r.encoded_texts == 3  # three unique prompts
    r(imgs, prompts, None)
    assert r.encoded_texts == 3

    model = transformers.CLIPModel.from_pretrained(clip_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(clip_dir)
    t = tok(prompts, padding=True, return_tensors="pt")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[None, :, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[None, :, None, None]
    with torch.no_grad():
        te = pooled(model.get_text_features(input_ids=t.input_ids, attention_mask=t.attention_mask))
        ie = pooled(model.get_image_features(pixel_values=(_prep(imgs, 32) - mean) / std))
    torch.testing.assert_close(s, F.cosine_similarity(te, ie, dim=-1), atol=1e-5, rtol=1e-4)

    # long prompts are truncated to the context length instead of failing
    assert r(imgs[:1], ["a very long prompt " * 20], None).shape == (1,)


def _prep(x: torch.Tensor, size: int) -> torch.Tensor:
    return resize_center_crop(x, size, size)


def test_clip_i_is_image_identity(clip_dir: Path) -> None:
    r = make_reward("clip", path=str(clip_dir), mode="image", device="cpu")
    refs = _images(2, 11)
    torch.testing.assert_close(r(refs, ["a", "b"], refs), torch.ones(2), atol=1e-5, rtol=0)
    s = r(_images(2, 12), ["a", "b"], refs)
    assert (s < 0.9999).all()
    with pytest.raises(ValueError, match="references"):
        r(refs, ["a", "b"], None)
    with pytest.raises(ValueError, match="mode"):
        make_reward("clip", path=str(clip_dir), mode="both")


def test_pooled_accepts_tensor_and_output_object() -> None:
    t = torch.randn(2, 4)
    assert pooled(t) is t
    out = transformers.modeling_outputs.BaseModelOutputWithPooling(
        last_hidden_state=torch.randn(2, 3, 4), pooler_output=t
    )
    assert pooled(out) is t
    with pytest.raises(TypeError):
        pooled(object())


# ----------------------------------------------------------------------------- errors


def test_missing_or_incomplete_weights_fail_at_construction(tmp_path: Path, clip_dir: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        make_reward("dinov2", path=str(missing))
    msg = str(e.value)
    assert "\n" not in msg and "dinov2" in msg and str(missing) in msg
    assert "config.json" in msg and "model.safetensors" in msg and "hf download" in msg

    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"dino reward: .*incomplete, missing model"):
        make_reward("dino", path=str(tmp_path / "cfg_only"))

    # sharded weights with a missing shard are incomplete too
    shard = tmp_path / "shard"
    shard.mkdir()
    (shard / "config.json").write_text("{}")
    (shard / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002.safetensors"):
        check_hf_folder("dinov2", shard, "facebook/dinov2-base", tokenizer=False)

    # CLIP-T needs the tokenizer files, CLIP-I does not
    no_tok = tmp_path / "clip_no_tok"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (no_tok / f).write_bytes((clip_dir / f).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"clip reward: .*tokenizer\.json"):
        make_reward("clip", path=str(no_tok), mode="text")
    assert make_reward("clip", path=str(no_tok), mode="image", device="cpu").mode == "image"
    with pytest.raises(FileNotFoundError, match="no weights path given"):
        make_reward("dinov2")


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(ValueError, match="absent.png"):
        load_image(tmp_path / "absent.png")
    # ... and says what to do about it
    with pytest.raises(ValueError, match="replace it with a valid PNG or JPEG"):
        load_image(bad, 16, crop=True)
    with pytest.raises(ValueError, match=r"image file not found: .*check the path"):
        load_image(tmp_path / "absent.png", 16)


def test_bad_batches_are_rejected(dinov2_dir: Path) -> None:
    r = make_reward("dinov2", path=str(dinov2_dir), device="cpu")
    with pytest.raises(ValueError, match="shape"):
        r(torch.rand(2, 1, 32, 32), ["a", "b"], torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="references"):
        r(torch.rand(2, 3, 32, 32), ["a", "b"], torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="prompts"):
        r(torch.rand(2, 3, 32, 32), ["a"], torch.rand(2, 3, 32, 32))


# ----------------------------------------------------------------------------- segmentation


def _subject_on(background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A patterned 20x12 subject at rows 10:30, cols 30:42 of a 48x64 image; its mask."""
    img = background.clone()
    g = torch.Generator().manual_seed(42)
    img[:, 10:30, 30:42] = torch.rand(3, 20, 12, generator=g)
    mask = torch.zeros(48, 64)
    mask[10:30, 30:42] = 1.0
    return img, mask


def test_mask_boxes_and_crop_to_mask() -> None:
    bg = torch.zeros(3, 48, 64)
    bg[1] = 0.5
    img, mask = _subject_on(bg)
    box, found = mask_boxes(torch.stack([mask, torch.zeros(48, 64)]))
    assert found.tolist() == [True, False]
    assert box[0].tolist() == [10.0, 30.0, 30.0, 42.0]
    assert box[1].tolist() == [0.0, 0.0, 48.0, 64.0]

    crop = crop_to_mask(img[None], mask[None], size=40, margin=0.0)[0]
    assert crop.shape == (3, 40, 40)
    # square box of side 20 centred on the subject: the subject spans cols 8:32 of 40 px
    assert torch.allclose(crop[:, :, :7], torch.ones(3, 40, 7), atol=1e-6)  # white, not green
    assert torch.allclose(crop[:, :, 33:], torch.ones(3, 40, 7), atol=1e-6)
    inner = F.interpolate(img[None, :, 10:30, 30:42], size=(40, 24), mode="bilinear")[0]
    torch.testing.assert_close(crop[:, 2:38, 10:30], inner[:, 2:38, 2:22], atol=0.08, rtol=0)

    # non-square mode stretches the box; an empty mask keeps the whole image
    stretched = crop_to_mask(img[None], mask[None], size=40, margin=0.0, square=False)[0]
    assert stretched.sub(1).abs().amax(dim=0).gt(0.05).float().mean() > 0.9
    whole = crop_to_mask(img[None], torch.zeros(1, 48, 64), size=32, square=False)[0]
    torch.testing.assert_close(
        whole, F.interpolate(img[None], size=(32, 32), mode="bilinear")[0], atol=0.1, rtol=0
    )


def test_dino_seg_ignores_the_background(dinov2_dir: Path) -> None:
    """With a perfect (callable) segmenter the same subject on two backgrounds scores 1."""
    a, mask = _subject_on(torch.zeros(3, 48, 64) + torch.tensor([0.1, 0.6, 0.2])[:, None, None])
    noisy = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(3))
    b, _ = _subject_on(noisy)
    masks_seen: list[int] = []

    def oracle(images: torch.Tensor) -> torch.Tensor:
        masks_seen.append(images.shape[0])
        return mask.expand(images.shape[0], -1, -1)

    plain = make_reward("dinov2", path=str(dinov2_dir), device="cpu")
    seg = make_reward("dinov2", path=str(dinov2_dir), device="cpu", segmenter=oracle)
    assert plain(b[None], ["x"], a[None]).item() < 0.99
    assert seg(b[None], ["x"], a[None]).item() == pytest.approx(1.0, abs=1e-5)
    assert masks_seen == [1, 1]  # generated image, then the reference

    # the paper's code: segment only the reference
    ref_only = make_reward(
        "dinov2", path=str(dinov2_dir), device="cpu", segmenter=oracle, seg_mode="reference"
    )
    masks_seen.clear()
    s = ref_only(b[None], ["x"], a[None]).item()
    assert masks_seen == [1]
    with torch.no_grad():
        e_gen = F.normalize(plain.encode(b[None]), dim=-1)
        # the box crop is made at the model's input size (32) and seen as it is
        e_ref = F.normalize(plain.encode_crops(crop_to_mask(a[None], mask[None], 32)), dim=-1)
    assert s == pytest.approx((e_gen * e_ref).sum().item(), abs=1e-5)
    assert s < 1 - 1e-4
    with pytest.raises(ValueError, match="seg_mode"):
        make_reward("dinov2", path=str(dinov2_dir), segmenter=oracle, seg_mode="generated")


def test_pluggable_segmenters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_segmenter(None) is None and make_segmenter("none") is None
    x = torch.rand(2, 3, 8, 10)

    # a registered name
    @SEGMENTERS.register("test_centre_box")
    def _factory(side: int = 4) -> object:
        def seg(images: torch.Tensor) -> torch.Tensor:
            m = torch.zeros(images.shape[0], *images.shape[2:])
            m[:, :side, :side] = 1
            return m

        return seg

    try:
        s = make_segmenter("test_centre_box", side=2)
        assert s is not None and s(x).sum().item() == 2 * 4
    finally:
        del SEGMENTERS.kinds["test_centre_box"]

    # an import string "module:attribute" (class or factory)
    mod = types.ModuleType("my_local_segmenter")

    class Half:
        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            return torch.full((images.shape[0], *images.shape[2:]), 0.5)

    mod.Half = Half  # type: ignore[attr-defined]
    mod.wrong_shape = lambda images: torch.ones(3, 3)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_local_segmenter", mod)
    s = make_segmenter("my_local_segmenter:Half")
    assert s is not None and torch.all(s(x) == 0.5)
    bad = make_segmenter(mod.wrong_shape)
    assert bad is not None
    with pytest.raises(ValueError, match="expected"):
        bad(x)
    with pytest.raises(ValueError, match="unknown segmenter kind 'sam-huge'; valid kinds: none"):
        make_segmenter("sam-huge")
    with pytest.raises(ValueError, match="cannot import"):
        make_segmenter("no_such_module_xyz:seg")


# ----------------------------------------------------------------------------- cache


def test_embedding_cache_is_bounded_and_encodes_unique_misses() -> None:
    cache = EmbeddingCache(max_items=2)
    seen: list[list[int]] = []

    def enc(keys: list[str]):
        def f(pos: list[int]) -> torch.Tensor:
            seen.append(pos)
            return torch.tensor([[float(ord(keys[p]))] for p in pos])

        return f

    keys = ["a", "b", "a"]
    out = cache.get_many(keys, enc(keys))
    assert out.squeeze(1).tolist() == [97.0, 98.0, 97.0] and seen == [[0, 1]]
    keys = ["c", "a"]
    cache.get_many(keys, enc(keys))  # "b" is evicted (least recently used)
    assert seen[-1] == [0] and len(cache) == 2
    keys = ["b"]
    cache.get_many(keys, enc(keys))
    assert seen[-1] == [0]


# ----------------------------------------------------------------------------- hpsv3


def test_hpsv3_missing_package_and_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match=r"hpsv3 reward: checkpoint .*HPSv3\.safetensors"):
        make_reward("hpsv3", checkpoint_path=str(tmp_path / "none.safetensors"))
    ckpt = tmp_path / "HPSv3.safetensors"
    ckpt.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "hpsv3", None)  # makes `import hpsv3` raise ImportError
    with pytest.raises(HPSv3Error, match=r"optional package 'hpsv3'.*cgrpo setup hpsv3"):
        make_reward("hpsv3", checkpoint_path=str(ckpt))


_FAKE_HPSV3 = '''
class HPSv3RewardInferencer:
    """Stand-in with the real API: reward(images, prompts) -> rows of (mu, sigma)."""
    instances = []

    def __init__(self, config_path=None, checkpoint_path=None, device="cuda"):
        assert checkpoint_path is not None
        self.device = device
        self.calls = 0
        HPSv3RewardInferencer.instances.append(self)

    def reward(self, image_paths, prompts):
        self.calls += 1
        import numpy as np
        from PIL import Image
        rows = []
        for im, p in zip(image_paths, prompts):
            if not isinstance(im, Image.Image):
                im = Image.open(im)
            mean = float(np.asarray(im.convert("L"), dtype=np.float64).mean()) / 255.0
            rows.append([mean + len(p), -1.0])
        return rows
'''


def test_hpsv3_in_process_and_isolated_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "fakepkgs" / "hpsv3"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_FAKE_HPSV3)
    ckpt = tmp_path / "HPSv3.safetensors"
    ckpt.write_bytes(b"x")
    imgs = torch.zeros(3, 3, 16, 16)
    imgs[1] = 1.0
    imgs[2] = 0.5
    prompts = ["ab", "abcd", "a"]
    want = torch.tensor([0.0 + 2, 1.0 + 4, 128 / 255 + 1])

    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))
    monkeypatch.delitem(sys.modules, "hpsv3", raising=False)
    r = make_reward("hpsv3", checkpoint_path=str(ckpt), device="cpu", batch_size=2)
    s = r(imgs, prompts, None)
    torch.testing.assert_close(s, want, atol=1e-3, rtol=0)
    assert r.inferencer.calls == 2  # batches of 2

    w = make_reward(
        "hpsv3",
        checkpoint_path=str(ckpt),
        device="cpu",
        python=sys.executable,
        env={"PYTHONPATH": str(tmp_path / "fakepkgs")},
    )
    try:
        torch.testing.assert_close(w(imgs, prompts, None), want, atol=1e-3, rtol=0)
    finally:
        w.close()
    assert w.proc is None


def test_model_files_found_from_path_or_installed_package(tmp_path: Path) -> None:
    from cgrpo.rewards.effnet import WEIGHTS_FILE
    from cgrpo.rewards.effnet import find_effnet_weights as find_weights
    from cgrpo.rewards.u2netp import find_u2netp

    packaged = find_weights(None)  # the pip package's copy
    assert packaged.name == WEIGHTS_FILE and packaged.is_file()
    (tmp_path / "models").mkdir()
    mine = tmp_path / "models" / WEIGHTS_FILE
    mine.write_bytes(b"x")
    assert find_weights(tmp_path) == mine and find_weights(mine) == mine
    with pytest.raises(FileNotFoundError, match=r"effnet reward: no model file at .*nowhere"):
        find_weights(tmp_path / "nowhere")
    assert find_u2netp(None).name == "u2netp.onnx"
    with pytest.raises(FileNotFoundError, match=r"segmenter u2netp: .*u2netp\.onnx.*get it with"):
        find_u2netp(tmp_path)


def test_rewards_follow_the_policy_device_unless_told() -> None:
    from cgrpo.rewards.base import make_reward_on

    assert str(make_reward_on("effnet", "cpu:0").device) == "cpu:0"  # default: cpu
    assert str(make_reward_on("effnet", "cpu:0", device="cpu").device) == "cpu"
    # the embedded rewards take no device (they work where the images are)
    assert make_reward_on("embedded_identity", "cpu").name == "embedded_identity"
    with pytest.raises(ValueError, match="unknown reward kind 'nope'"):
        make_reward_on("nope", "cpu")
