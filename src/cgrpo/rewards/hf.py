"""Rewards and metrics of the paper from local Hugging Face weights: ``dinov2``, ``dino``, ``clip``.

Every backend loads a local folder (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, plus the tokenizer files for CLIP) with ``local_files_only=True``; a
path that is not such a folder fails at construction with one line naming the backend, the
path, the files expected and how to get them. Nothing is ever downloaded.

- ``dinov2`` (:class:`Dinov2IdentityReward`): cosine of the DINOv2 CLS embeddings
  (``Dinov2Model``, e.g. ``facebook/dinov2-base`` as in the paper's code) of the generated
  image and its reference; with ``segmenter="u2netp"`` (or a stronger one) this is DINO-Seg.
- ``dino`` (:class:`DinoIdentityReward`): the DreamBench DINO metric, DINO v1 ViT-S/16
  (``ViTModel``, ``facebook/dino-vits16``), resize 256 / centre-crop 224, CLS cosine.
- ``clip`` (:class:`ClipReward`): ``mode="text"`` is CLIP-T = cos(text, image), ``mode="image"``
  is CLIP-I = cos(image, reference) (``CLIPModel``, ``openai/clip-vit-base-patch32`` for
  DreamBench).

Images are preprocessed as tensors (resize shorter side, centre crop, mean/std) with the
values of the folder's ``preprocessor_config.json`` when present, so batches stay on the GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cgrpo.io.images import resize_center_crop
from cgrpo.rewards.identity import EmbeddingIdentityReward
from cgrpo.rewards.images import EmbeddingCache, check_batch, normalize

__all__ = [
    "ClipReward",
    "DinoIdentityReward",
    "Dinov2IdentityReward",
    "check_hf_folder",
    "pooled",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _howto(repo: str, path: str | Path) -> str:
    return (
        f"get them on a machine with internet with `hf download {repo} --local-dir {path}` "
        "(or `huggingface-cli download`) and copy the folder here"
    )


def check_hf_folder(backend: str, path: str | Path | None, repo: str, *, tokenizer: bool) -> Path:
    """Check that ``path`` is a complete local Hugging Face model folder; return it.

    Expected: ``config.json``; ``model.safetensors`` or ``pytorch_model.bin`` (or a sharded
    index whose shards all exist); with ``tokenizer``, ``tokenizer.json`` or
    ``vocab.json`` + ``merges.txt``. Raises ``FileNotFoundError`` with one line otherwise.
    """
    expected = "config.json + model.safetensors (or pytorch_model.bin)"
    if tokenizer:
        expected += " + tokenizer.json (or vocab.json + merges.txt)"
    if path is None:
        raise FileNotFoundError(
            f"{backend} reward: no weights path given (option path=...); expected a local "
            f"folder with {expected}; {_howto(repo, '<folder>')}"
        )
    p = Path(path).expanduser()
    missing: list[str] = []
    if not p.is_dir():
        raise FileNotFoundError(
            f"{backend} reward: weights folder {str(p)!r} does not exist; expected {expected}; "
            f"{_howto(repo, p)}"
        )
    if not (p / "config.json").is_file():
        missing.append("config.json")
    found = [f for f in _WEIGHT_FILES if (p / f).is_file()]
    if not found:
        missing.append("model.safetensors (or pytorch_model.bin)")
    for index in (f for f in found if f.endswith(".index.json")):
        try:
            shards = set(json.loads((p / index).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as exc:
            missing.append(f"a readable {index} ({exc.__class__.__name__})")
            continue
        missing += sorted(s for s in shards if not (p / s).is_file())
    if tokenizer and not (
        (p / "tokenizer.json").is_file()
        or ((p / "vocab.json").is_file() and (p / "merges.txt").is_file())
    ):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if missing:
        raise FileNotFoundError(
            f"{backend} reward: weights folder {str(p)!r} is incomplete, missing "
            f"{', '.join(missing)}; expected {expected}; {_howto(repo, p)}"
        )
    return p


def _preprocessor(path: Path) -> dict[str, Any]:
    f = path / "preprocessor_config.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {}


def _size(value: object, default: int) -> int:
    """An int from a processor size entry (int, ``shortest_edge`` or ``height``)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for k in ("shortest_edge", "height"):
            if isinstance(value.get(k), int):
                return int(value[k])
    return default


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def pooled(out: object) -> torch.Tensor:
    """The embedding tensor of a ``get_*_features`` result.

    transformers < 5 returns the projected embeddings as a tensor; transformers 5 returns a
    ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds them. Both are accepted.
    """
    if isinstance(out, torch.Tensor):
        return out
    emb = getattr(out, "pooler_output", None)
    if isinstance(emb, torch.Tensor):
        return emb
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
        return out[1]
    raise TypeError(f"cannot find the pooled embedding in a {type(out).__name__}")


class _HFImageEncoder(EmbeddingIdentityReward):
    """Shared preprocessing (:meth:`pixel_values`) of the transformers image encoders."""

    def _setup_preprocessing(
        self,
        path: Path,
        resize: int | None,
        crop: int | None,
        *,
        mean: tuple[float, float, float] | None,
        std: tuple[float, float, float] | None,
        defaults: tuple[int, int, tuple[float, ...], tuple[float, ...]],
        use_folder: bool = True,
    ) -> None:
        proc = _preprocessor(path) if use_folder else {}
        d_resize, d_crop, d_mean, d_std = defaults
        self.resize = resize or _size(proc.get("size"), d_resize)
        self.crop = crop or _size(proc.get("crop_size"), d_crop)
        if not proc.get("do_center_crop", True) and crop is None:
            self.crop = self.resize
        self.mean = tuple(mean or proc.get("image_mean") or d_mean)
        self.std = tuple(std or proc.get("image_std") or d_std)
        self.input_size = self.crop

    def pixel_values(self, images: torch.Tensor, *, cropped: bool = False) -> torch.Tensor:
        """Model input (N, 3, crop, crop) of images (N, 3, H, W) in [0, 1].

        Whole images: resize the shorter side to ``resize``, centre-crop ``crop``.
        ``cropped`` (segmented square crops): resample to ``crop`` x ``crop`` only when the
        size differs, no centre crop. Then ``(x - mean) / std``."""
        x = images.to(self.device, torch.float32)
        if not cropped:
            x = resize_center_crop(x, self.resize, self.crop)
        elif tuple(x.shape[-2:]) != (self.crop, self.crop):
            x = torch.nn.functional.interpolate(
                x, size=(self.crop, self.crop), mode="bicubic", antialias=True
            )
        return normalize(x, self.mean, self.std).to(self.dtype)

    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of model inputs (N, 3, crop, crop)."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # whole images
        return self.embed_pixels(self.pixel_values(images))

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:  # segmented box crops
        return self.embed_pixels(self.pixel_values(crops, cropped=True))


class Dinov2IdentityReward(_HFImageEncoder):
    """Identity: cosine of DINOv2 embeddings (``Dinov2Model``), generated vs reference.

    Range [-1, 1] (in practice ~0.1-1), times ``scale`` (``scale=100`` gives the paper's
    "x100" numbers). ``pooling``: ``"cls"`` (the layer-normed CLS token, default), ``"mean"``
    (mean of the patch tokens) or ``"cls+mean"`` (their concatenation).
    Preprocessing from the folder's processor config (dinov2: resize 256, crop 224, ImageNet
    mean/std), overridable with ``resize``, ``crop``, ``mean``, ``std``.
    ``path``: local folder of e.g. ``facebook/dinov2-base``. ``dtype``: ``"float32"``,
    ``"float16"`` or ``"bfloat16"``. Other options: see
    :class:`~cgrpo.rewards.identity.EmbeddingIdentityReward` (``segmenter``, ``seg_mode``, ...).
    """

    name = "dinov2"
    repo = "facebook/dinov2-base"

    def __init__(
        self,
        path: str | Path | None = None,
        pooling: str = "cls",
        dtype: str | torch.dtype = "float32",
        *,
        resize: int | None = None,
        crop: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        **options: Any,
    ) -> None:
        folder = check_hf_folder(self.name, path, self.repo, tokenizer=False)
        if pooling not in ("cls", "mean", "cls+mean"):
            raise ValueError(f"pooling must be 'cls', 'mean' or 'cls+mean', got {pooling!r}")
        super().__init__(**options)
        from transformers import Dinov2Model

        self.dtype = _dtype(dtype)
        self.model = Dinov2Model.from_pretrained(
            str(folder), local_files_only=True, dtype=self.dtype
        )
        self.model = self.model.to(self.device).eval()
        self.pooling = pooling
        self._setup_preprocessing(
            folder,
            resize,
            crop,
            mean=mean,
            std=std,
            defaults=(256, 224, IMAGENET_MEAN, IMAGENET_STD),
        )

    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """DINOv2 embeddings (N, D) (or (N, 2D) for ``cls+mean``)."""
        h = self.model(pixel_values=pixel_values).last_hidden_state
        cls, patches = h[:, 0], h[:, 1:].mean(dim=1)
        if self.pooling == "cls":
            return cls
        if self.pooling == "mean":
            return patches
        return torch.cat([cls, patches], dim=-1)


class DinoIdentityReward(_HFImageEncoder):
    """The DreamBench DINO metric: DINO v1 ViT-S/16 (``ViTModel``) CLS cosine.

    Preprocessing is DreamBench's (resize the shorter side to 256, centre-crop 224, bicubic,
    ImageNet mean/std) whatever the folder's processor config says; ``resize``/``crop``
    override it. Range [-1, 1], times ``scale``. ``path``: local folder of
    ``facebook/dino-vits16``. Other options as :class:`Dinov2IdentityReward`.
    """

    name = "dino"
    repo = "facebook/dino-vits16"

    def __init__(
        self,
        path: str | Path | None = None,
        dtype: str | torch.dtype = "float32",
        resize: int = 256,
        *,
        crop: int = 224,
        **options: Any,
    ) -> None:
        folder = check_hf_folder(self.name, path, self.repo, tokenizer=False)
        super().__init__(**options)
        from transformers import ViTModel

        self.dtype = _dtype(dtype)
        self.model = ViTModel.from_pretrained(
            str(folder), local_files_only=True, dtype=self.dtype, add_pooling_layer=False
        )
        self.model = self.model.to(self.device).eval()
        self._setup_preprocessing(
            folder,
            resize,
            crop,
            mean=None,
            std=None,
            defaults=(resize, crop, IMAGENET_MEAN, IMAGENET_STD),
            use_folder=False,
        )

    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLS embeddings (N, D) after the final layer norm."""
        out = self.model(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return out.last_hidden_state[:, 0]


class ClipReward(_HFImageEncoder):
    """CLIP scores (``CLIPModel``): ``mode="text"`` (CLIP-T) or ``mode="image"`` (CLIP-I).

    - CLIP-T = cos(E_text(prompt), E_image(image)): prompt following; references unused
      (may be ``None``). Text embeddings are cached per unique prompt.
    - CLIP-I = cos(E_image(image), E_image(reference)): identity; supports the segmentation
      options of :class:`~cgrpo.rewards.identity.EmbeddingIdentityReward`; references cached.

    Range [-1, 1] times ``scale`` (CLIP-T of a matching pair is ~0.3; ``scale=2.5`` gives the
    CLIPScore convention, ``100`` percentages). Preprocessing from the folder's processor
    config (resize 224, crop 224, CLIP mean/std). ``path``: local folder of e.g.
    ``openai/clip-vit-base-patch32`` (with its tokenizer files).
    """

    name = "clip"
    repo = "openai/clip-vit-base-patch32"

    def __init__(
        self,
        path: str | Path | None = None,
        mode: str = "text",
        dtype: str | torch.dtype = "float32",
        *,
        resize: int | None = None,
        crop: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        **options: Any,
    ) -> None:
        if mode not in ("text", "image"):
            raise ValueError(f"clip mode must be 'text' (CLIP-T) or 'image' (CLIP-I), got {mode!r}")
        folder = check_hf_folder(self.name, path, self.repo, tokenizer=mode == "text")
        super().__init__(**options)
        from transformers import AutoTokenizer, CLIPModel

        self.mode = mode
        self.name = "clip_t" if mode == "text" else "clip_i"
        self.uses_references = mode == "image"
        self.dtype = _dtype(dtype)
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=self.dtype)
        self.model = self.model.to(self.device).eval()
        self.tokenizer = (
            AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            if mode == "text"
            else None
        )
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.text_cache = EmbeddingCache(self.cache.max_items)
        self.encoded_texts = 0
        self._setup_preprocessing(
            folder, resize, crop, mean=mean, std=std, defaults=(224, 224, CLIP_MEAN, CLIP_STD)
        )

    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected CLIP image embeddings (N, D)."""
        return pooled(self.model.get_image_features(pixel_values=pixel_values))

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Projected CLIP text embeddings (N, D), unit norm; truncated to the context length."""
        assert self.tokenizer is not None
        tok = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        self.encoded_texts += len(prompts)
        emb = pooled(self.model.get_text_features(**tok)).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def embed_texts(self, prompts: list[str]) -> torch.Tensor:
        """Unit text embeddings (B, D), each unique prompt encoded once (cached)."""
        return self.text_cache.get_many(
            prompts, lambda pos: self.encode_text([prompts[i] for i in pos])
        )

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CLIP-T (B,) or CLIP-I (B,) times ``scale``, on the images' device."""
        if self.mode == "image":
            return super().__call__(images, prompts, references)  # type: ignore[arg-type]
        imgs, prompts, _ = check_batch(images, prompts, references, need_references=False)
        with torch.no_grad():
            e_img = self.embed_images(imgs)
            e_txt = self.embed_texts(prompts).to(e_img.device)
            cos = (e_img * e_txt).sum(dim=-1)
        return (self.scale * cos).float().to(images.device)
