"""File-based pair sources: JSONL/JSON pairs and the DreamBench folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgrpo.data.base import EmbeddedData, HasEvalTruth, PairSource, PairsWithEval
from cgrpo.data.dreambench import DreamBenchPairs
from cgrpo.data.files import DatasetError, JsonlPairs
from cgrpo.io.images import load_image

DREAMBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "dreambench"


def _image(path: Path, w: int, h: int, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def pairs_dir(tmp_path: Path) -> Path:
    _image(tmp_path / "img" / "a.png", 40, 20, 0)
    _image(tmp_path / "img" / "b.jpg", 16, 30, 255)
    _image(tmp_path / "img" / "t.png", 16, 16, 128)
    return tmp_path


def test_jsonl_pairs(pairs_dir: Path) -> None:
    rows = [
        {"reference": "img/a.png", "prompt": "a dog on the beach", "target": "img/t.png"},
        {"reference": str(pairs_dir / "img" / "b.jpg"), "prompt": "a red can"},
    ]
    f = pairs_dir / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    src = JsonlPairs(f, image_size=8, eval_count=1)
    as_source: PairSource = src  # static check of the protocol
    assert callable(as_source.sample) and len(src) == 2
    assert src.entries[0].target == pairs_dir / "img" / "t.png"
    refs, prompts = src.sample(5, random.Random(0))
    assert refs.shape == (5, 3, 8, 8) and refs.dtype == torch.float32
    assert set(prompts) <= {r["prompt"] for r in rows}
    for r, p in zip(refs, prompts, strict=True):  # black image for a.png, white for b.jpg
        assert float(r.mean()) == (0.0 if p == "a dog on the beach" else 1.0)
    eref, eprompts, names = src.eval_pairs()
    assert eref.shape == (1, 3, 8, 8) and eprompts == [rows[0]["prompt"]] and names == ["a"]

    # the same pairs as a JSON list
    g = pairs_dir / "pairs.json"
    g.write_text(json.dumps(rows))
    assert [e.prompt for e in JsonlPairs(g, 8).entries] == [r["prompt"] for r in rows]


def test_ground_truth_is_a_declared_capability(pairs_dir: Path) -> None:
    """Only a source that knows each held-out pair's ground truth is a HasEvalTruth."""
    f = pairs_dir / "pairs.jsonl"
    f.write_text(json.dumps({"reference": "img/a.png", "prompt": "a dog"}) + "\n")
    files = JsonlPairs(f, image_size=8, eval_count=1)
    assert not isinstance(files, HasEvalTruth)
    assert not isinstance(PairsWithEval(files, files), HasEvalTruth)
    assert isinstance(EmbeddedData(eval_prompts_per_subject=1), HasEvalTruth)


def test_jsonl_errors_name_the_file(pairs_dir: Path) -> None:
    empty = pairs_dir / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="empty"):
        JsonlPairs(empty, 8)
    missing = pairs_dir / "missing.jsonl"
    missing.write_text(json.dumps({"reference": "img/nope.png", "prompt": "x"}))
    with pytest.raises(DatasetError, match="nope.png"):
        JsonlPairs(missing, 8)
    bad = pairs_dir / "bad.jsonl"
    bad.write_text(json.dumps({"image": "img/a.png", "prompt": "x"}))
    with pytest.raises(DatasetError, match="line 1 needs exactly one of 'reference'"):
        JsonlPairs(bad, 8)
    both = {"reference": "img/a.png", "references": ["img/a.png"], "prompt": "x"}
    for rec, why in [
        (both, "exactly one of"),
        ({"references": [], "prompt": "x"}, "non-empty list"),
        ({"references": ["img/a.png", 3], "prompt": "x"}, "non-empty list of string paths"),
        ({"reference": "img/a.png"}, "string field 'prompt'"),
    ]:
        bad.write_text(json.dumps(rec))
        with pytest.raises(DatasetError, match=why):
            JsonlPairs(bad, 8)
    with pytest.raises(DatasetError, match="not found"):
        JsonlPairs(pairs_dir / "nothing.jsonl", 8)

    corrupt = pairs_dir / "img" / "corrupt.png"
    corrupt.write_bytes(b"not a png at all")
    f = pairs_dir / "corrupt.jsonl"
    f.write_text(json.dumps({"reference": "img/corrupt.png", "prompt": "a can"}))
    with pytest.raises(DatasetError, match="corrupt.png"):  # found at start, not when sampled
        JsonlPairs(f, 8)


def test_bad_images_are_listed_by_file_line_before_compute(pairs_dir: Path) -> None:
    """Every image is opened at start: one error lists the bad entries by their 1-based
    file line (blank lines counted); data.skip_bad skips them and counts them."""
    good = pairs_dir / "img" / "a.png"
    raw = good.read_bytes()
    (pairs_dir / "img" / "cut.png").write_bytes(raw[: len(raw) // 2])  # truncated PNG
    (pairs_dir / "img" / "text.png").write_bytes(b"not a png at all")
    lines = [
        json.dumps({"reference": "img/a.png", "prompt": "a dog"}),
        "",
        json.dumps({"reference": "img/cut.png", "prompt": "a dog"}),
        json.dumps({"reference": "img/b.jpg", "prompt": "a can", "target": "img/text.png"}),
        json.dumps({"reference": "img/gone.png", "prompt": "a cat"}),
    ]
    f = pairs_dir / "mixed.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        JsonlPairs(f, 8)
    msg = str(e.value)
    assert "3 of 5 entries" in msg and "data.skip_bad=true" in msg
    for where, name in (("line 3", "cut.png"), ("line 4", "text.png"), ("line 5", "gone.png")):
        assert f"{where}: '" in msg and name in msg
    assert "line 1:" not in msg
    src = JsonlPairs(f, 8, skip_bad=True)
    assert src.skipped == 3 and [e.reference.name for e in src.entries] == ["a.png"]
    f.write_text(lines[0] + "\n" + json.dumps({"image": "x"}) + "\n")
    with pytest.raises(DatasetError, match="line 2 needs"):
        JsonlPairs(f, 8)


def test_dreambench_folder_with_a_bad_reference_fails_listing_it(tmp_path: Path) -> None:
    import shutil

    if not DREAMBENCH.is_dir():
        pytest.skip("DreamBench not present")
    root = tmp_path / "db"
    shutil.copytree(DREAMBENCH, root, ignore=shutil.ignore_patterns("*.md"))
    refs = json.loads((root / "single_reference.json").read_text())
    subject = sorted(refs)[3]
    (root / subject / refs[subject]).write_bytes(b"broken")
    with pytest.raises(DatasetError) as e:
        DreamBenchPairs(root, 16)
    assert f"subject '{subject}'" in str(e.value) and "1 of 30" in str(e.value)


def test_load_image_centre_crops_the_shorter_side(tmp_path: Path) -> None:
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255  # white centre third
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img = load_image(tmp_path / "wide.png", 10, crop=True)
    assert img.shape == (3, 10, 10) and float(img.mean()) > 0.9
    small = load_image(tmp_path / "wide.png", 60, crop=True)  # the shorter side goes up too
    assert small.shape == (3, 60, 60) and small.is_contiguous()


def test_references_keep_the_stored_orientation(tmp_path: Path) -> None:
    """The datasets read references as stored; the reward-side reading applies EXIF."""
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "rot.jpg", exif=exif)
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"reference": "rot.jpg", "prompt": "a"}))
    refs, _ = JsonlPairs(tmp_path / "pairs.jsonl", 8).sample(1, random.Random(0))
    stored = load_image(tmp_path / "rot.jpg", 8, crop=True, exif_transpose=False)
    assert torch.equal(refs[0], stored)
    assert load_image(tmp_path / "rot.jpg").shape == (3, 40, 20)  # EXIF applied
    assert load_image(tmp_path / "rot.jpg", exif_transpose=False).shape == (3, 20, 40)


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="shared DreamBench folder not present")
def test_dreambench_pairs() -> None:
    db = DreamBenchPairs(DREAMBENCH, image_size=32)
    assert len(db.subjects) == 30
    assert all(len(p) == 25 for p in db.prompts.values())
    assert sum(len(p) for p in db.prompts.values()) == 750
    for s in db.subjects:
        assert all(db.classes[s] in p for p in db.prompts[s])
        assert all("{" not in p for p in db.prompts[s])
    refs = json.loads((DREAMBENCH / "single_reference.json").read_text())
    assert {s: p.name for s, p in db.references.items()} == refs
    assert db.classes["bear_plushie"] == "stuffed animal"
    assert db.prompts["backpack"][0] == "a backpack in the jungle"
    assert "a dog wearing a red hat" in db.prompts["dog"]  # live-subject template
    assert "a cat in a chef outfit" in db.prompts["cat2"]
    assert not any("outfit" in p for p in db.prompts["teapot"])  # object template

    x, prompts = db.sample(3, random.Random(0))
    assert x.shape == (3, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    small = DreamBenchPairs(DREAMBENCH, image_size=16, prompts_per_subject=2)
    refs_t, eprompts, names = small.eval_pairs()
    assert refs_t.shape == (60, 3, 16, 16) and len(eprompts) == len(names) == 60
    assert names[:2] == ["backpack", "backpack"]
    assert eprompts[:2] == [small.prompts["backpack"][0], small.prompts["backpack"][12]]
    both = PairsWithEval(small, small)
    assert both.eval_pairs()[1] == eprompts
    with pytest.raises(DatasetError, match="prompts_per_subject"):
        DreamBenchPairs(DREAMBENCH, 16, prompts_per_subject=26)


def test_dreambench_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        DreamBenchPairs(tmp_path / "nope")


def test_keep_aspect_and_multi_reference_batches(pairs_dir: Path) -> None:
    """kontext/uno preparation needs the whole image; several references per pair come as
    a ReferenceBatch whose view is exactly the square crop the square datasets return."""
    from cgrpo.data.references import ReferenceBatch, reward_view

    a, b = pairs_dir / "img" / "a.png", pairs_dir / "img" / "b.jpg"
    rows = [
        {"reference": "img/a.png", "prompt": "a dog"},
        {"references": ["img/b.jpg", "img/a.png"], "prompt": "a dog and a can"},
    ]
    f = pairs_dir / "multi.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    for keep in (False, True):
        src = JsonlPairs(f, image_size=8, eval_count=2, keep_aspect=keep)
        assert src.entries[1].references == (b, a)
        refs, prompts, _ = src.eval_pairs()
        assert isinstance(refs, ReferenceBatch) and refs.counts == [1, 2]
        crop = [load_image(p, 8, crop=True, exif_transpose=False) for p in (a, b)]
        assert torch.equal(reward_view(refs), torch.stack(crop))
        rows_k, second = refs.views(1)
        assert rows_k.tolist() == [1] and torch.equal(second[0], crop[0])
        whole = refs.images[1][0]
        assert whole.shape == ((3, 30, 16) if keep else (3, 8, 8))
        rep = refs.repeat_interleave(3)[1:5]  # indexes like the tensor it stands for
        assert rep.counts == [1, 1, 2, 2] and rep.view.shape == (4, 3, 8, 8)
        assert rep.images[2][0] is refs.images[1][0]  # repeats share the images
    uno = pairs_dir / "multiip.json"  # UNO's own list format (datasets/dreambench_multiip.json)
    uno.write_text(
        json.dumps([{"prompt": "a dog and a can", "image_paths": ["./img/b.jpg", "./img/a.png"]}])
    )
    assert JsonlPairs(uno, 8).entries[0].references == (b, a)
    single = pairs_dir / "single.jsonl"
    single.write_text(json.dumps(rows[0]))
    assert isinstance(JsonlPairs(single, 8).sample(2, random.Random(0))[0], torch.Tensor)
    whole = JsonlPairs(single, 8, keep_aspect=True).sample(2, random.Random(0))[0]
    assert isinstance(whole, ReferenceBatch) and whole.images[0][0].shape == (3, 20, 40)


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="needs ../shared/data/dreambench")
def test_dreambench_keep_aspect_gives_whole_photos_and_the_same_view() -> None:
    square = DreamBenchPairs(DREAMBENCH, 64, prompts_per_subject=1)
    whole = DreamBenchPairs(DREAMBENCH, 64, prompts_per_subject=1, keep_aspect=True)
    refs, _, names = square.eval_pairs()
    batch, _, names2 = whole.eval_pairs()
    assert names == names2 and torch.equal(batch.view, refs)
    first = load_image(whole.references[names[0]], exif_transpose=False)
    assert torch.equal(batch.images[0][0], first) and first.shape[-1] > 64
