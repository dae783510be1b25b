"""Reference images prepared as each model's own pipeline prepares them
(``flux.reference_preprocess``).

* ``square``: the dataset's centre-cropped square view, resized (bilinear, antialiased) to
  ``flux.resolution`` when it is not that size already: the same tokens as the target.
* ``kontext`` (diffusers' ``FluxKontextPipeline`` with its default ``_auto_resize``): the
  image's size is floored to a multiple of ``m`` (2 x the VAE's downsampling, 16 for FLUX),
  the preferred Kontext resolution whose aspect ratio ``W/H`` is nearest is chosen
  (:data:`PREFERRED_KONTEXT_RESOLUTIONS`, ties to the smaller ``W``), floored to a multiple
  of ``m``, and the whole image is resized to it with PIL's Lanczos filter (no crop). A
  square photo becomes 1024 x 1024: 4,096 reference tokens next to a 512 px target's 1,024.
* ``uno`` (UNO's ``preprocess_ref``): the longer side is resized to ``L`` and the shorter to
  ``int(L / long * short)`` (Lanczos, aspect kept), then the centre ``16 floor`` box is kept
  (both sides floored to multiples of 16, the crop offset ``floor((n - n16) / 2)``).
  ``L = flux.uno_ref_size``; its default -1 is UNO's inference default: 512 with one
  reference, 320 with several.

All three return a float (3, H', W') tensor in [0, 1]; the policy VAE-encodes it at that
size, so the reference's token grid is ``(H' / m, W' / m)`` and its position ids span that
grid (:func:`cgrpo.policies.flux.latents.position_ids`). The encoding takes the posterior's
mode, as diffusers' Kontext pipeline does (``sample_mode="argmax"``); UNO's own
inference code draws a sample of it instead, which would make a pair's condition random.
Files are read in their stored orientation (no EXIF rotation) and converted to RGB before
the resize (UNO converts after it: the same for RGB files).

A batch's references are prepared pair by pair (:func:`prepare_references`), then
VAE-encoded, each distinct one once, and packed per pair, zero-padded to the longest
(:func:`encode_references`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cgrpo.data.references import References
from cgrpo.io.images import from_pil, to_pil
from cgrpo.policies.flux.config import FluxConfig

__all__ = [
    "PREFERRED_KONTEXT_RESOLUTIONS",
    "PREPROCESS",
    "encode_references",
    "kontext_size",
    "prepare_reference",
    "prepare_references",
    "uno_box",
]

#: The (width, height) buckets FLUX.1 Kontext was trained on (about 1 megapixel each), as
#: listed by diffusers' ``pipeline_flux_kontext``.
PREFERRED_KONTEXT_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248),
    (880, 1184), (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832),
    (1328, 800), (1392, 752), (1456, 720), (1504, 688), (1568, 672),
)  # fmt: skip

PREPROCESS = ("square", "kontext", "uno")


def kontext_size(width: int, height: int, multiple_of: int = 16) -> tuple[int, int]:
    """``(W, H)`` Kontext resizes a ``width`` x ``height`` reference to (module docstring)."""
    w, h = width - width % multiple_of, height - height % multiple_of
    if w < 1 or h < 1:
        raise ValueError(
            f"reference of {width}x{height} px is smaller than {multiple_of} px on a side: "
            "Kontext cannot prepare it; use a larger reference image"
        )
    aspect = w / h
    _, bw, bh = min((abs(aspect - bw / bh), bw, bh) for bw, bh in PREFERRED_KONTEXT_RESOLUTIONS)
    return bw // multiple_of * multiple_of, bh // multiple_of * multiple_of


def uno_box(width: int, height: int, long_side: int) -> tuple[tuple[int, int], tuple[int, ...]]:
    """``((new_w, new_h), (left, top, right, bottom))``: UNO's resize and centre crop."""
    if width >= height:
        nw, nh = long_side, int(long_side / width * height)
    else:
        nw, nh = int(long_side / height * width), long_side
    tw, th = nw // 16 * 16, nh // 16 * 16
    if tw < 16 or th < 16:
        raise ValueError(
            f"reference of {width}x{height} px is too elongated for UNO's preparation at "
            f"long side {long_side}: its short side ends below 16 px; crop it closer to square"
        )
    left, top = (nw - tw) // 2, (nh - th) // 2
    return (nw, nh), (left, top, left + tw, top + th)


def prepare_reference(
    image: torch.Tensor,
    mode: str,
    *,
    resolution: int,
    multiple_of: int = 16,
    long_side: int = 512,
) -> torch.Tensor:
    """One (3, H, W) reference in [0, 1] prepared by ``mode`` (module docstring) -> (3, H', W').

    ``square`` expects the dataset's square view; the others the whole image (its pixels
    are 8-bit values, as loaded from a file, so the PIL round trip is exact).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"a reference must have shape (3, H, W), got {tuple(image.shape)}")
    if mode == "square":
        if image.shape[-2:] == (resolution, resolution):
            return image.float()
        return torch.nn.functional.interpolate(
            image[None].float(), size=(resolution, resolution), mode="bilinear",
            antialias=True, align_corners=False,
        )[0]  # fmt: skip
    from PIL import Image

    im = to_pil(image)
    if mode == "kontext":
        return from_pil(im.resize(kontext_size(*im.size, multiple_of), Image.Resampling.LANCZOS))
    if mode == "uno":
        size, box = uno_box(*im.size, long_side)
        return from_pil(im.resize(size, Image.Resampling.LANCZOS).crop(box))
    raise ValueError(f"unknown flux.reference_preprocess {mode!r}; valid: {', '.join(PREPROCESS)}")


def prepare_references(
    references: References, config: FluxConfig, *, multiple_of: int
) -> list[list[torch.Tensor]]:
    """Per pair, its references as the model's pipeline prepares them
    (``flux.reference_preprocess``); pairs repeated in a batch share their tensors."""
    c = config
    mode = c.reference_preprocess
    if isinstance(references, torch.Tensor):
        if mode != "square":
            raise ValueError(
                f"flux.reference_preprocess={mode} needs each reference whole, but the "
                "data gave centre-cropped squares: build the data with "
                "cgrpo.run.build.build_data (it keeps the aspect ratio for kontext and uno)"
            )
        pairs = [[r] for r in references]
    elif mode == "square":  # the dataset's square view of every reference
        pairs = [list(references.pair_views(i)) for i in range(len(references))]
    else:
        pairs = [list(r) for r in references.images]
    out, done = [], {}
    for refs in pairs:
        long_side = c.uno_ref_size if c.uno_ref_size > 0 else (512 if len(refs) == 1 else 320)
        row = []
        for r in refs:
            key = (id(r), long_side)  # pairs repeated in a batch share their tensors
            if key not in done:
                done[key] = (r, prepare_reference(
                    r, mode, resolution=c.resolution, multiple_of=multiple_of, long_side=long_side
                ))  # fmt: skip
            row.append(done[key][1])
        out.append(row)
    return out


def encode_references(
    prepared: list[list[torch.Tensor]],
    encode: Callable[[torch.Tensor], torch.Tensor],
    *,
    multiple_of: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepared references -> ``(tokens (B, N, 4C), shapes (B, R, 2))``.

    ``encode`` takes a batch of same-sized images to their packed tokens (the VAE); each
    distinct reference is encoded once, in one call per size. A pair's references'
    tokens are concatenated in order and zero-padded to the longest pair;
    ``shapes[i, k]`` is reference k's token grid ``(rows, cols)`` (zero: no reference)."""
    m = multiple_of
    unique = {id(r): r for refs in prepared for r in refs}  # repeated pairs share tensors
    by_size: dict[tuple[int, ...], list[int]] = {}
    for key, r in unique.items():
        by_size.setdefault(tuple(r.shape), []).append(key)
    encoded: dict[int, torch.Tensor] = {}
    for keys in by_size.values():  # one VAE batch per size
        tokens = encode(torch.stack([unique[k] for k in keys]))
        encoded.update(zip(keys, tokens, strict=True))
    rows = []
    for refs in prepared:
        grid = [(r.shape[-2] // m, r.shape[-1] // m) for r in refs]
        rows.append((torch.cat([encoded[id(r)] for r in refs]), grid))
    n = max(t.shape[0] for t, _ in rows)
    r_max = max(len(g) for _, g in rows)
    first = rows[0][0]
    tokens = torch.zeros(len(rows), n, first.shape[1], dtype=first.dtype, device=first.device)
    shapes = torch.zeros(len(rows), r_max, 2, dtype=torch.long)
    for i, (t, g) in enumerate(rows):
        tokens[i, : t.shape[0]] = t
        shapes[i, : len(g)] = torch.tensor(g)
    return tokens, shapes
