"""The reward server's ``POST /score`` body: images as base64 raw 8-bit RGB, in JSON.

One request scores one batch with one named reward::

    {"reward": "prompt", "prompts": ["a dog on the beach", ...],
     "shape": [n, h, w], "images": "<base64 of n*h*w*3 uint8, RGB, row-major>",
     "reference_shape": [n, h', w'], "references": "<base64 ...>"}   # when the reward reads them

and is answered ``{"scores": [n floats]}`` or, with an HTTP error status, ``{"error": "one
line"}``. Images travel as the 8-bit pixels a saved PNG holds (``round(255 x)``,
:func:`cgrpo.io.images.to_uint8`) without PNG's compression cost; the server scores
``pixels / 255``. Used by :mod:`cgrpo.rewards.server` and :mod:`cgrpo.rewards.remote`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cgrpo.io.images import to_uint8

__all__ = ["ScoreRequest", "ScoreRequestError", "decode_images", "encode_images"]


class ScoreRequestError(ValueError):
    """A ``/score`` body that cannot be read; the message names the field."""


def encode_images(images: torch.Tensor) -> tuple[list[int], str]:
    """(n, 3, h, w) in [0, 1] -> ``([n, h, w], base64 of the uint8 RGB pixels)``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (n, 3, h, w), got {tuple(images.shape)}")
    arr = np.ascontiguousarray(to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())
    n, h, w, _ = arr.shape
    return [n, h, w], base64.b64encode(arr.tobytes()).decode("ascii")


def decode_images(shape: Any, data: Any, *, field: str = "images") -> torch.Tensor:
    """The inverse of :func:`encode_images`: (n, 3, h, w) float32 in [0, 1] on the CPU."""
    ok = isinstance(shape, list) and len(shape) == 3
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ScoreRequestError(
            f"{field}: its shape must be [n, h, w] of positive ints, got {shape!r}"
        )
    if not isinstance(data, str):
        raise ScoreRequestError(f"{field}: expected a base64 string of uint8 RGB pixels")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ScoreRequestError(f"{field}: not valid base64") from None
    n, h, w = shape
    if len(raw) != n * h * w * 3:
        raise ScoreRequestError(
            f"{field}: {len(raw)} bytes for shape {shape}: expected n*h*w*3 = {n * h * w * 3}"
        )
    pixels = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(n, h, w, 3)
    return pixels.permute(0, 3, 1, 2).contiguous().float() / 255  # contiguous: as PNGs load


@dataclass
class ScoreRequest:
    """One batch for one named reward (``references`` None when the reward ignores them)."""

    reward: str
    images: torch.Tensor
    prompts: list[str]
    references: torch.Tensor | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /score``."""
        shape, data = encode_images(self.images)
        out: dict[str, Any] = {
            "reward": self.reward,
            "prompts": list(self.prompts),
            "shape": shape,
            "images": data,
        }
        if self.references is not None:
            out["reference_shape"], out["references"] = encode_images(self.references)
        return out

    @classmethod
    def read(cls, body: Any) -> ScoreRequest:
        """A request from its JSON body; :class:`ScoreRequestError` naming a bad field."""
        if not isinstance(body, Mapping):
            raise ScoreRequestError(
                "the body must be a JSON object {reward, prompts, shape, images}"
            )
        reward, prompts = body.get("reward"), body.get("prompts")
        if not isinstance(reward, str):
            raise ScoreRequestError("reward: give the name of one of the server's rewards")
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ScoreRequestError("prompts: expected a list of strings, one per image")
        images = decode_images(body.get("shape"), body.get("images"))
        refs = None
        if body.get("references") is not None:
            refs = decode_images(
                body.get("reference_shape"), body["references"], field="references"
            )
            if len(refs) != len(images):
                raise ScoreRequestError(f"references: {len(refs)} for {len(images)} images")
        if len(prompts) != len(images):
            raise ScoreRequestError(f"prompts: {len(prompts)} for {len(images)} images")
        return cls(reward, images, prompts, refs)
