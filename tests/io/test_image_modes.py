"""Every image mode reads as the 8-bit RGB rendering of the same picture: one smooth
gradient saved as 16-bit grey, palette, CMYK, alpha, float, 1-bit ... and read back with
``load_image`` is within 1/255 of that rendering (issue 27: a 16-bit PNG used to read as
99 % white)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgrpo.io.image_modes import to_rgb
from cgrpo.io.images import from_pil, load_image
from tests.io.crafted_png import write_png16

H, W = 24, 40
_Y, _X = np.mgrid[0:H, 0:W].astype(np.float64)
#: the picture as float in [0, 1]: three different gradients, and one grey ramp
COLOUR = np.stack([_X / (W - 1), _Y / (H - 1), (_X + _Y) / (W + H - 2)], axis=-1)
GREY = 0.7 * _X / (W - 1) + 0.3 * _Y / (H - 1)
#: a falling alpha ramp over x (opaque on the left, transparent on the right)
ALPHA = 1.0 - _X / (W - 1)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.uint8)


def _u16(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 65535).astype(np.uint16)


def _rgb(grey8: np.ndarray) -> np.ndarray:
    return np.repeat(grey8[..., None], 3, axis=-1)


def _on_white(rgb8: np.ndarray, alpha8: np.ndarray) -> np.ndarray:
    a = alpha8[..., None] / 255.0
    return np.rint(rgb8 * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _assert_reads_as(path: Path, expected: np.ndarray, mode: str, tol: int = 1) -> None:
    """The file opens in ``mode`` (so the case tests what it says) and ``load_image`` gives
    ``expected`` (H, W, 3 uint8) within ``tol`` / 255."""
    with Image.open(path) as im:
        assert im.mode == mode, f"{path.name} opens as {im.mode}, not {mode}"
    got = load_image(path).permute(1, 2, 0).numpy() * 255.0
    diff = np.abs(got - expected.astype(np.float64))
    assert diff.max() <= tol + 1e-3, f"{path.name} ({mode}): off by {diff.max():.2f}/255"


def test_8bit_rgb_and_grey_read_exactly(tmp_path: Path) -> None:
    Image.fromarray(_u8(COLOUR)).save(tmp_path / "rgb.png")
    _assert_reads_as(tmp_path / "rgb.png", _u8(COLOUR), "RGB", tol=0)
    Image.fromarray(_u8(GREY)).save(tmp_path / "l.png")
    _assert_reads_as(tmp_path / "l.png", _rgb(_u8(GREY)), "L", tol=0)
    bw = np.where(_u8(GREY) >= 128, 255, 0).astype(np.uint8)
    Image.fromarray(bw).convert("1", dither=Image.Dither.NONE).save(tmp_path / "bw.png")
    _assert_reads_as(tmp_path / "bw.png", _rgb(bw), "1", tol=0)


def test_16bit_grey_png_reads_as_its_8bit_rendering(tmp_path: Path) -> None:
    """The reported case: a 16-bit grey PNG of mean ~0.5 read as mean 0.998."""
    path = tmp_path / "grey16.png"
    Image.fromarray(_u16(GREY)).save(path)
    _assert_reads_as(path, _rgb(_u8(GREY)), "I;16")
    assert abs(float(load_image(path).mean()) - float(GREY.mean())) < 0.005
    # exact multiples of 257 are the 8-bit values exactly
    Image.fromarray(_u8(GREY).astype(np.uint16) * 257).save(path)
    _assert_reads_as(path, _rgb(_u8(GREY)), "I;16", tol=0)
    # and the crop the datasets take is the 8-bit file's crop
    Image.fromarray(_u8(GREY)).save(tmp_path / "grey8.png")
    crop16, crop8 = (load_image(p, 16, crop=True) for p in (path, tmp_path / "grey8.png"))
    assert torch.equal(crop16, crop8)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_and_32bit_grey_tiffs(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"grey_{mode.replace(';', '')}.tif"
    values = _u16(GREY)
    if mode == "I;16B":  # PIL's convert("I;16B") clips at 255: build it from bytes
        im = Image.frombytes(mode, (W, H), values.astype(">u2").tobytes())
    else:
        im = Image.fromarray(values.astype(np.int32) if mode == "I" else values)
    im.save(path)
    _assert_reads_as(path, _rgb(_u8(GREY)), mode)


@pytest.mark.parametrize("mode", ["I;16L", "I;16B", "I;16N"])
def test_every_16bit_byte_order_converts(mode: str) -> None:
    """Byte orders PIL only makes in memory: the same values give the same picture."""
    values = _u16(GREY)
    order = {"I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}[mode]
    im = Image.frombytes(mode, (W, H), values.astype(order).tobytes())
    got = np.asarray(to_rgb(im)).astype(int)
    assert np.abs(got - _rgb(_u8(GREY))).max() <= 1


def test_float_grey_in_either_scale(tmp_path: Path) -> None:
    """``F`` images hold 0..1 (most tools) or 0..255 (PIL's convert("F")): both read."""
    for name, values in (("unit", GREY), ("byte", GREY * 255.0)):
        path = tmp_path / f"f_{name}.tif"
        Image.fromarray(values.astype(np.float32)).save(path)
        _assert_reads_as(path, _rgb(_u8(GREY)), "F")


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_colour_and_alpha_pngs(tmp_path: Path, channels: int) -> None:
    """16-bit RGB, RGBA (opaque) and grey + alpha (opaque) PNGs, which PIL reads as 8-bit
    (grey + alpha as RGBA)."""
    pixels = {3: COLOUR, 4: np.dstack([COLOUR, np.ones((H, W))]),
              2: np.dstack([GREY, np.ones((H, W))])}[channels]  # fmt: skip
    path = write_png16(tmp_path / f"c{channels}.png", _u16(pixels))
    expected = _rgb(_u8(GREY)) if channels == 2 else _u8(COLOUR)
    _assert_reads_as(path, expected, {3: "RGB", 4: "RGBA", 2: "RGBA"}[channels])


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgb8, grey8, a8 = _u8(COLOUR), _u8(GREY), _u8(ALPHA)
    Image.fromarray(np.dstack([rgb8, np.full((H, W), 255, np.uint8)])).save(tmp_path / "o.png")
    _assert_reads_as(tmp_path / "o.png", rgb8, "RGBA", tol=0)
    Image.fromarray(np.dstack([rgb8, a8])).save(tmp_path / "rgba.png")
    _assert_reads_as(tmp_path / "rgba.png", _on_white(rgb8, a8), "RGBA")
    Image.fromarray(np.dstack([grey8, a8])).save(tmp_path / "la.png")
    _assert_reads_as(tmp_path / "la.png", _rgb(_on_white(_rgb(grey8), a8)[..., 0]), "LA")
    # a fully transparent pixel is white whatever colour it stores
    assert load_image(tmp_path / "rgba.png")[:, :, -1].min() == 1.0


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    idx = _u8(GREY)
    lut = np.stack([np.arange(256), 255 - np.arange(256), np.arange(256) // 2], -1)
    lut = lut.astype(np.uint8)
    im = Image.frombytes("P", (W, H), idx.tobytes())
    im.putpalette(lut.reshape(-1).tolist())
    im.save(tmp_path / "p.png")
    _assert_reads_as(tmp_path / "p.png", lut[idx], "P", tol=0)
    clear = int(idx[0, 0])  # the top-left colour is the transparent one
    im.save(tmp_path / "p_trns.png", transparency=clear)
    expected = np.where((idx == clear)[..., None], 255, lut[idx]).astype(np.uint8)
    assert (idx == clear).sum() > 0 and (idx != clear).sum() > 0
    _assert_reads_as(tmp_path / "p_trns.png", expected, "P", tol=0)
    im.save(tmp_path / "p_trns.gif", transparency=clear)
    _assert_reads_as(tmp_path / "p_trns.gif", expected, "P", tol=0)


def test_cmyk_tiff(tmp_path: Path) -> None:
    rgb8, grey8 = _u8(COLOUR), _u8(GREY)
    Image.fromarray(rgb8).convert("CMYK").save(tmp_path / "cmy.tif")
    _assert_reads_as(tmp_path / "cmy.tif", rgb8, "CMYK")
    # the grey picture drawn with black ink only
    zero = np.zeros((H, W), np.uint8)
    k = np.dstack([zero, zero, zero, 255 - grey8])
    Image.frombytes("CMYK", (W, H), k.tobytes()).save(tmp_path / "k.tif")
    _assert_reads_as(tmp_path / "k.tif", _rgb(grey8), "CMYK")


def test_from_pil_converts_the_same_way() -> None:
    """Images handed over in memory (``from_pil``) follow the same rules as files."""
    im = Image.fromarray(_u16(GREY))
    assert im.mode == "I;16"
    got = from_pil(im).permute(1, 2, 0).numpy() * 255.0
    assert np.abs(got - _rgb(_u8(GREY))).max() <= 1 + 1e-3
