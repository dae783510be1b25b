"""A competitive-degradation sweep's records (``--records DIR``): one compressed file per
finished run, ``DIR/<arm>/seed<k>.json.gz``, and one of the shared base evaluation,
``DIR/base_eval.json.gz`` (:mod:`cgrpo.experiments.records`). Restored into an empty
``--out`` they make the sweep skip those runs and the report read them; saved after each
run, never over a record of other settings."""

from __future__ import annotations

import json
from pathlib import Path

from cgrpo.experiments.config_diff import config_changes, config_of_text, saved_config
from cgrpo.experiments.degradation import (
    ARMS,
    BASE_RECORD,
    DEFAULT_ARM,
    RUN_RECORD,
    Settings,
    run_config,
)
from cgrpo.experiments.records import SUFFIX, read_record, restore_record, save_record
from cgrpo.experiments.run_folders import done

__all__ = ["keep_records", "record_of", "restore_records"]


def record_of(records: Path, name: str) -> Path:
    """The record file of run folder ``name`` (``<arm>/seed<k>`` or ``base_eval``)."""
    return records / f"{name}{SUFFIX}"


def _recorded_runs(records: Path) -> list[str]:
    """The runs (``<arm>/seed<k>``) recorded under ``records``."""
    return sorted(
        f"{a}/{p.name.removesuffix(SUFFIX)}"
        for a in ARMS
        for p in (records / a).glob(f"seed*{SUFFIX}")
    )


def restore_records(settings: Settings) -> None:
    """Every run (and the base evaluation) recorded under ``records`` and absent from
    ``out``, unpacked there: the sweep skips them and the report reads them."""
    records = settings.records
    if not records:
        return
    n = sum(
        bool(restore_record(record_of(records, r), settings.out / r, RUN_RECORD))
        for r in _recorded_runs(records)
    )
    base = restore_record(record_of(records, "base_eval"), settings.out / "base_eval", BASE_RECORD)
    if n or base:
        print(f"restored from {records}: {n} runs" + (", the base" if base else ""))


def keep_records(settings: Settings) -> None:
    """The record of every run finished at ``steps`` with these settings, and of the base
    evaluation, saved under ``records`` (nothing without it). A run of other settings is
    not recorded; a record of other settings is not replaced (refused)."""
    if not settings.records:
        return
    for d in sorted(d for a in ARMS for d in (settings.out / a).glob("seed*") if d.is_dir()):
        if not done(d, settings.steps):
            continue
        cfg = run_config(settings, d.parent.name, int(d.name.removeprefix("seed")), run_dir=d)
        if config_changes(saved_config(d / "config.yaml"), cfg):
            print(f"not recorded: {d} (trained with other settings)", flush=True)
            continue
        name = d.relative_to(settings.out).as_posix()
        _keep(d, record_of(settings.records, name), RUN_RECORD, cfg=cfg)
    base, record = settings.out / "base_eval", record_of(settings.records, "base_eval")
    if (base / "metrics.json").is_file():
        made = json.loads((base / "metrics.json").read_text())
        text = read_record(record).get("metrics.json")
        kept = json.loads(text) if text is not None else made
        # (the record's evaluation against --out's, which base_eval checked against settings)
        sizes = [k for k in ("pairs", "images_per_pair") if kept[k] != made[k]]
        cfg = run_config(settings, DEFAULT_ARM, 0, run_dir=base)
        _keep(base, record, BASE_RECORD, cfg=cfg, ignore=("run.",), differ=sizes)


def _keep(run_dir: Path, record: Path, files: list[str], *, cfg, ignore=(), differ=()) -> None:
    """``save_record``, refused where ``record`` holds a config (its first file) other than
    ``cfg`` (or ``differ`` names other differences)."""
    keys = [*differ]
    kept = read_record(record).get(files[0])
    if kept is not None:
        keys += config_changes(config_of_text(kept), cfg, ("run.out_dir", *ignore))
    if keys:
        raise SystemExit(
            f"{record} records a run of other settings ({', '.join(keys)} differ) than "
            f"{run_dir}: use another --records folder for this sweep"
        )
    save_record(run_dir, record, files)
