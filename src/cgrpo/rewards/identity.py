"""The shared base of the embedding identity rewards (``dinov2``, ``dino``, ``effnet``, CLIP-I).

:class:`EmbeddingIdentityReward`: optional segmentation (:mod:`cgrpo.rewards.segment`),
encoding, cached reference embeddings and the cosine; a subclass gives the encoder.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cgrpo.rewards.images import EmbeddingCache, check_batch, image_key, resolve_device
from cgrpo.rewards.segment import crop_to_mask, make_segmenter, paint_outside

__all__ = ["EmbeddingIdentityReward"]


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
    - ``seg_crop``: ``"box"`` paints a segmented image white outside the mask and crops it
      to a square around the mask (:func:`crop_to_mask` with ``seg_threshold``,
      ``seg_margin``) at ``crop_size`` pixels (default: the encoder's input size,
      :attr:`input_size`); the crop is encoded as it is (:meth:`encode_crops`: no second
      resize or centre crop). ``"frame"`` only paints outside the mask white and keeps the
      frame (:func:`paint_outside`), then encodes it like a whole image (:meth:`encode`),
      as the released code treats its pre-segmented ``_seg.png`` reference.

    Reference embeddings are cached by content (:class:`~cgrpo.rewards.images.EmbeddingCache`,
    ``cache_size`` entries): each unique reference is segmented and encoded once, across
    calls. Images are encoded in chunks of ``batch_size``. ``device``: ``None`` picks CUDA
    when available. Scores are returned as float32 on the images' device.
    """

    name = "identity"
    #: Side of the square the encoder sees (its centre crop); segmented box crops are made
    #: at this size unless ``crop_size`` says otherwise. Subclasses set it.
    input_size: int = 224

    def __init__(
        self,
        segmenter: object = None,
        seg_mode: str = "both",
        segmenter_options: dict[str, Any] | None = None,
        *,
        seg_crop: str = "box",
        crop_size: int | None = None,
        seg_threshold: float = 0.5,
        seg_margin: float = 0.05,
        scale: float = 1.0,
        batch_size: int = 32,
        cache_size: int = 1024,
        device: str | torch.device | None = None,
    ) -> None:
        if seg_mode not in ("both", "reference"):
            raise ValueError(f"seg_mode must be 'both' or 'reference', got {seg_mode!r}")
        if seg_crop not in ("box", "frame"):
            raise ValueError(f"seg_crop must be 'box' or 'frame', got {seg_crop!r}")
        if crop_size is not None and crop_size < 16:
            raise ValueError(f"crop_size must be >= 16, got {crop_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.segmenter = make_segmenter(segmenter, **(segmenter_options or {}))
        self.seg_mode = seg_mode
        self.seg_crop = seg_crop
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

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of segmented square crops (N, 3, S, S) in [0, 1], already framed.

        Default: :meth:`encode`, exact for an encoder whose resize and crop leave a square of
        :attr:`input_size` as it is; an encoder that would resample or crop it again
        overrides this to encode the crop as given."""
        return self.encode(crops)

    # -- machinery -----------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, segment: bool) -> torch.Tensor:
        """Segment, then crop (``seg_crop="box"``, at ``crop_size`` or :attr:`input_size`)
        or only paint (``"frame"``), when ``segment`` and a segmenter is set; else pass
        the images through."""
        if not segment or self.segmenter is None:
            return images
        masks = self.segmenter(images)
        if self.seg_crop == "frame":
            return paint_outside(images, masks, threshold=self.seg_threshold)
        size = self.crop_size or self.input_size
        return crop_to_mask(
            images, masks, size, threshold=self.seg_threshold, margin=self.seg_margin
        )

    def _embed(self, images: torch.Tensor, segment: bool) -> torch.Tensor:
        cropped = segment and self.segmenter is not None and self.seg_crop == "box"
        encode = self.encode_crops if cropped else self.encode
        outs = []
        for i in range(0, images.shape[0], self.batch_size):
            chunk = self.prepare(images[i : i + self.batch_size].to(self.device), segment)
            outs.append(F.normalize(encode(chunk).float(), dim=-1))
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
