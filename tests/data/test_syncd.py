"""The paper's training data: SynCD's JSON list read as it is, and runs that would train on
their evaluation pairs stopped at start (data.allow_eval_overlap)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from cgrpo.config.core import load_config
from cgrpo.data.base import PairsWithEval
from cgrpo.data.overlap import eval_overlap
from cgrpo.run.build import build_data
from cgrpo.run.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
DREAMBENCH = Path(os.environ.get("CGRPO_DREAMBENCH", ROOT.parent / "shared/data/dreambench"))
needs_dreambench = pytest.mark.skipif(
    not (DREAMBENCH / "single_reference.json").is_file(), reason="DreamBench not found"
)


def syncd_record(folder: str, ident: str, text: str, *, ref: str | list[str] = "") -> dict:
    """One entry shaped as the release's datasets/train_1w_syncd_embedding.json."""
    return {
        "id": ident,
        "category": "rigid",
        "category_description": "a red post box with a black lid.",
        "ref_img": ref or f"{folder}/0.png",
        "img": f"{folder}/1.png",
        "ref_prompt": "a red post box with a black lid next to a trash can.",
        "text": text,
        "txt_save_path": f"./datasets/syncd_meta/encoder_hidden_states/{folder}.pt",
        "vec_save_path": f"./datasets/syncd_meta/pooled_prompt_embeds/{folder}.pt",
    }


def write_syncd(root: Path, records: list[dict]) -> tuple[Path, Path]:
    """A SynCD-format folder: ``root/syncd/<folder>/{0,1}.png`` and the JSON list beside it
    (the release's layout: ``datasets/train_1w_syncd_embedding.json`` + ``datasets/syncd``)."""
    images = root / "syncd"
    for rec in records:
        refs = rec["ref_img"] if isinstance(rec["ref_img"], list) else [rec["ref_img"]]
        for name in [*refs, rec["img"]]:
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            if not (images / name).exists():
                Image.new("RGB", (40, 32), (200, 30, 30)).save(images / name)
    listing = root / "train_1w_syncd_embedding.json"
    listing.write_text(json.dumps(records, indent=2))
    return listing, images


def paper_data(listing: Path, images: Path, *overrides: str) -> TrainConfig:
    """configs/uno_syncd.yaml with its data files moved to ``listing`` / ``images``."""
    return load_config(
        TrainConfig,
        ROOT / "configs" / "uno_syncd.yaml",
        [f"data.path={listing}", f"data.image_root={images}", f"data.eval_root={DREAMBENCH}",
         "model.device=cpu", *overrides],
    )  # fmt: skip


@needs_dreambench
def test_the_paper_configs_read_syncd_as_released(tmp_path: Path) -> None:
    """The shipped data section reads the release's list: the reference is ``ref_img`` under
    the image root, the prompt is ``text`` (not ``ref_prompt``), the target ``img``, the name
    ``id``; a list under ``ref_img`` is several references; evaluation is DreamBench."""
    records = [
        syncd_record("14551", "3040", "a red post box on a highway."),
        syncd_record("29507", "3041", "a donut on a plate.", ref=["29507/0.png", "29508/0.png"]),
    ]
    listing, images = write_syncd(tmp_path, records)
    source = build_data(paper_data(listing, images))
    assert isinstance(source, PairsWithEval)
    one, two = source.train.entries
    assert one.references == (images / "14551/0.png",) and one.target == images / "14551/1.png"
    assert (one.prompt, one.name) == ("a red post box on a highway.", "3040")
    assert two.references == (images / "29507/0.png", images / "29508/0.png")
    assert eval_overlap(source) == ([], 750)


@needs_dreambench
def test_a_training_file_with_an_evaluation_pair_stops_with_one_line(tmp_path: Path) -> None:
    """A DreamBench pair in the training list (its photo spelt through another path, the
    prompt in other case and spacing) is found; the run stops naming the way out, and the
    same data builds when the overlap is allowed on purpose."""
    table = json.loads((DREAMBENCH / "single_reference.json").read_text())
    subject, file = next(iter(table.items()))
    assert subject == "backpack"  # its first prompt: "a backpack in the jungle"
    photo = DREAMBENCH / subject / file
    detour = DREAMBENCH / ".." / DREAMBENCH.name / subject / file
    records = [
        syncd_record("1", "0", "a red box"),
        syncd_record("2", "1", "  A BACKPACK  in the Jungle ", ref=str(detour)),
    ]
    listing, images = write_syncd(tmp_path, records)
    with pytest.raises(ValueError) as err:
        build_data(paper_data(listing, images))
    message = str(err.value)
    assert "\n" not in message and "1 of the 750 evaluation pairs" in message
    assert str(photo.resolve()) in message and "data.allow_eval_overlap=true" in message
    source = build_data(paper_data(listing, images, "data.allow_eval_overlap=true"))
    assert len(eval_overlap(source)[0]) == 1


@needs_dreambench
def test_training_on_dreambench_itself_needs_the_allow_flag() -> None:
    """data.kind=dreambench trains on its own evaluation pairs: refused unless allowed."""
    base = ["data.kind=dreambench", f"data.root={DREAMBENCH}", "data.prompts_per_subject=2"]
    with pytest.raises(ValueError, match="60 of the 60 evaluation pairs"):
        build_data(load_config(TrainConfig, None, base))
    assert build_data(load_config(TrainConfig, None, [*base, "data.allow_eval_overlap=true"]))


def test_a_pair_file_without_an_evaluation_set_is_its_own_evaluation(tmp_path: Path) -> None:
    """A JSONL with no data.eval_root evaluates on its first pairs: training pairs, so the
    run stops unless the overlap is allowed (the line says how to evaluate elsewhere)."""
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text(json.dumps({"reference": "a.png", "prompt": "a cube"}))
    keys = ["data.kind=jsonl", f"data.path={tmp_path / 'p.jsonl'}"]
    with pytest.raises(ValueError, match=r"data\.eval_root"):
        build_data(load_config(TrainConfig, None, keys))
    assert build_data(load_config(TrainConfig, None, [*keys, "data.allow_eval_overlap=true"]))


def test_syncd_fields_and_image_root_errors_name_the_key(tmp_path: Path) -> None:
    """A misspelt field name and a missing image root are one line naming the key."""
    listing, images = write_syncd(tmp_path, [syncd_record("1", "0", "a red box")])
    keys = ["data.kind=jsonl", f"data.path={listing}", "data.allow_eval_overlap=true"]
    with pytest.raises(ValueError, match=r"data\.fields: unknown field\(s\) \['promt'\]"):
        build_data(load_config(TrainConfig, None, [*keys, "data.fields={promt: text}"]))
    with pytest.raises(ValueError, match=r"data\.image_root"):
        build_data(load_config(TrainConfig, None, [*keys, f"data.image_root={tmp_path / 'x'}"]))
    # our own key names without the renaming: the record has no 'reference'
    with pytest.raises(ValueError, match="needs exactly one of 'reference'"):
        build_data(load_config(TrainConfig, None, [*keys, f"data.image_root={images}"]))
