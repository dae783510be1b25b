"""A pair file's text: bytes that are not UTF-8 name the file, the byte and the line; a
BOM is read past; a path the file system cannot take is one line; a 1 MB prompt is
quoted cut short in the lines that quote it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgrpo.data.files import DatasetError, JsonlPairs
from cgrpo.data.overlap import check_eval_overlap


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def test_a_jsonl_that_is_not_utf8_names_the_file_the_byte_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    first = json.dumps({"reference": "a.png", "prompt": "a dog"}) + "\n"
    path.write_bytes(
        first.encode() + '{"reference": "a.png", "prompt": "caf\xe9"}\n'.encode("cp1252")
    )
    with pytest.raises(DatasetError) as err:
        JsonlPairs(path, 8)
    offset = len(first) + len('{"reference": "a.png", "prompt": "caf')
    assert str(err.value) == (
        f"pair file '{path}' is not UTF-8 text: byte {offset} (line 2) is 0xe9: save it as UTF-8"
    )


def test_a_bom_is_read_past(tmp_path: Path, image: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"reference": "a.png", "prompt": "x"}).encode())
    assert [e.prompt for e in JsonlPairs(path, 8).entries] == ["x"]


def test_a_path_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / ("y" * 5000)
    with pytest.raises(DatasetError) as err:
        JsonlPairs(path, 8)
    text = str(err.value)
    assert text.startswith("pair file '") and "cannot be read: File name too long" in text
    assert "... (" in text and len(text) < 400


def test_a_deeply_nested_json_line_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetError, match="is not valid JSON: maximum recursion depth"):
        JsonlPairs(path, 8)


def test_a_1mb_prompt_is_quoted_cut_short(tmp_path: Path, image: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"reference": "a.png", "prompt": "x" * 1_000_000}) + "\n")
    pairs = JsonlPairs(path, 8, eval_count=1)  # its one pair is also its evaluation pair
    with pytest.raises(ValueError, match="the training pairs contain 1 of the 1") as err:
        check_eval_overlap(pairs, allow=False)
    text = str(err.value)
    assert len(text) < 800 and "... (1000000 chars)" in text
