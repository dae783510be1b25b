"""A truncated JPEG or a decompression-bomb header among the data is found when the data is
built, before any compute: refused in one line naming the file (and the JSONL line or the
DreamBench subject), or skipped and counted with ``data.skip_bad=true`` (issue 27: a run
with 1 bad image among 51 died at step 5, and skip_bad did not skip it)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cgrpo.cli import main
from cgrpo.data.dreambench import DreamBenchPairs
from cgrpo.data.files import DatasetError, JsonlPairs
from cgrpo.io.images import MAX_PIXELS
from tests.io.crafted_png import write_bomb_png
from tests.io.test_image_checks import write_truncated_jpeg

DREAMBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "dreambench"
PROMPTS = ["a red circle on a sky background", "a blue square on a grass background"]


def _pairs(tmp_path: Path, bad: Path) -> Path:
    """A JSONL of two pairs: a good PNG on line 1, ``bad`` on line 2."""
    Image.new("RGB", (32, 24), "red").save(tmp_path / "good.png")
    rows = [{"reference": "good.png", "prompt": PROMPTS[0]},
            {"reference": bad.name, "prompt": PROMPTS[1]}]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_a_truncated_jpeg_is_refused_or_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = write_truncated_jpeg(tmp_path / "cut.jpg")
    pairs = _pairs(tmp_path, cut)
    with pytest.raises(DatasetError) as err:
        JsonlPairs(pairs, 16)
    message = str(err.value)
    assert "\n" not in message and "1 of 2 entries" in message
    assert f"line 2: '{cut}'" in message and "truncated" in message
    assert "data.skip_bad=true" in message
    capsys.readouterr()
    source = JsonlPairs(pairs, 16, skip_bad=True)
    assert f"skipping 1 of 2 entries with unreadable images (first: line 2: '{cut}')" in (
        capsys.readouterr().out
    )
    assert source.skipped == 1 and [e.reference for e in source.entries] == [tmp_path / "good.png"]
    refs, prompts = source.sample(8, random.Random(0))  # every draw decodes
    assert refs.shape == (8, 3, 16, 16) and set(prompts) == {PROMPTS[0]}


def test_a_decompression_bomb_in_a_pair_file_names_it_and_the_cap(tmp_path: Path) -> None:
    bomb = write_bomb_png(tmp_path / "bomb.png", 50_000, 50_000)
    with pytest.raises(DatasetError) as err:
        JsonlPairs(_pairs(tmp_path, bomb), 16)
    message = str(err.value)
    assert "\n" not in message and f"line 2: '{bomb}'" in message
    assert f"over the cap of {MAX_PIXELS} pixels" in message
    assert len(JsonlPairs(_pairs(tmp_path, bomb), 16, skip_bad=True)) == 1


def test_a_truncated_dreambench_reference_is_refused_naming_the_subject(tmp_path: Path) -> None:
    if not (DREAMBENCH / "prompts_and_classes.txt").is_file():
        pytest.skip("DreamBench not present")
    root = tmp_path / "db"
    root.mkdir()
    shutil.copy(DREAMBENCH / "prompts_and_classes.txt", root)
    (root / "single_reference.json").write_text(json.dumps({"backpack": "00.jpg", "cat": "00.jpg"}))
    for subject in ("backpack", "cat"):
        (root / subject).mkdir()
        write_truncated_jpeg(root / subject / "00.jpg", keep=0.6 if subject == "cat" else 1.0)
    with pytest.raises(DatasetError) as err:
        DreamBenchPairs(root, 16)
    message = str(err.value)
    assert "\n" not in message and "1 of 2 entries" in message
    assert f"subject 'cat': '{root / 'cat' / '00.jpg'}'" in message and "truncated" in message


def test_cgrpo_train_refuses_a_truncated_jpeg_before_the_run_and_skips_it_on_request(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = write_truncated_jpeg(tmp_path / "cut.jpg")
    run = tmp_path / "run"
    args = ["train", "data.kind=jsonl", f"data.path={_pairs(tmp_path, cut)}",
            "data.allow_eval_overlap=true", f"model.weights={tiny_weights}",
            f"run.out_dir={run}", "run.steps=1", "run.eval=false", "run.threads=1",
            "data.prompts_per_step=1", "grpo.group_size=2", "sampler.num_steps=2",
            "--quiet"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cgrpo train: error: ")
    assert str(cut) in err and "truncated" in err
    assert not run.exists()
    assert main([*args, "data.skip_bad=true"]) == 0
    assert "skipping 1 of 2 entries" in capsys.readouterr().out
    assert (run / "checkpoints" / "step_000001").is_dir()
