"""The up-front image check decodes every file whole (a truncated JPEG passes a header
check, then killed a run at step 5), and a header claiming too many pixels (a
"decompression bomb") is one line naming the file and the cap, before anything is decoded
(issue 27)."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import cgrpo.io.images as images
from cgrpo.io.images import MAX_PIXELS, check_image, load_image
from tests.io.crafted_png import write_bomb_png


def write_truncated_jpeg(path: Path, *, keep: float = 0.6, progressive: bool = False) -> Path:
    """A valid 200 x 150 gradient JPEG cut to ``keep`` of its bytes."""
    y, x = np.mgrid[0:150, 0:200]
    rgb = np.stack([x * 255 // 199, y * 255 // 149, (x + y) * 255 // 348], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, progressive=progressive)
    raw = buf.getvalue()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


@pytest.mark.parametrize("progressive", [False, True])
def test_a_truncated_jpeg_fails_the_check(tmp_path: Path, progressive: bool) -> None:
    path = write_truncated_jpeg(tmp_path / "cut.jpg", progressive=progressive)
    with Image.open(path) as im:
        im.verify()  # the header check alone, what check_image did before, passes it
    why = check_image(path)
    assert why is not None and "truncated" in why
    with pytest.raises(ValueError) as err:
        load_image(path, 64, crop=True)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # nobody lets PIL fill in the gap
    assert check_image(write_truncated_jpeg(tmp_path / "whole.jpg", keep=1.0)) is None


@pytest.mark.parametrize(
    ("width", "height", "needle"),
    [
        (50_000, 50_000, "claims 2500000000 pixels"),  # past PIL's error threshold
        (10_000, 10_000, "claims 100000000 pixels"),  # PIL only warns here
        (9_000, 9_000, "is 9000 x 9000 pixels"),  # PIL says nothing here
    ],
)
def test_a_decompression_bomb_is_one_line_naming_the_file_and_the_cap(
    tmp_path: Path, width: int, height: int, needle: str
) -> None:
    path = write_bomb_png(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 200
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as err:
            load_image(path)
        why = check_image(path)
    assert time.perf_counter() - start < 5.0  # refused from the header, nothing decoded
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    message = str(err.value)
    assert "\n" not in message and str(path) in message and needle in message
    assert f"over the cap of {MAX_PIXELS} pixels" in message and "MAX_PIXELS" in message
    assert why is not None and needle in why and str(MAX_PIXELS) in why


def test_the_cap_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image of exactly MAX_PIXELS reads; one pixel more is refused."""
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    Image.new("RGB", (10, 10), "red").save(tmp_path / "ok.png")
    Image.new("RGB", (11, 10), "red").save(tmp_path / "big.png")
    assert check_image(tmp_path / "ok.png") is None
    assert load_image(tmp_path / "ok.png").shape == (3, 10, 10)
    assert "is 11 x 10 pixels (110), over the cap of 100" in (
        check_image(tmp_path / "big.png") or ""
    )
    with pytest.raises(ValueError, match="over the cap of 100 pixels"):
        load_image(tmp_path / "big.png")
