"""A step that cannot fit in memory is refused before the run folder exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgrpo.cli import main
from cgrpo.io.errors import ResourceError
from cgrpo.run.memory import check_rollout_memory, free_bytes, rollout_bytes


def test_rollout_bytes_is_the_float32_trajectory() -> None:
    assert rollout_bytes(8, 10, (3, 32, 32)) == 8 * 11 * 3 * 32 * 32 * 4


def test_check_refuses_only_what_cannot_fit() -> None:
    cpu = torch.device("cpu")
    free = free_bytes(cpu)
    assert free is not None and free > 0  # Linux tells MemAvailable
    check_rollout_memory(64, 10, (3, 32, 32), device=cpu)  # 8.7 MB
    with pytest.raises(ResourceError, match=r"grpo\.group_size or data\.prompts_per_step"):
        check_rollout_memory(free // (11 * 3072 * 4) + 1, 10, (3, 32, 32), device=cpu)


def test_a_huge_group_is_one_line_and_no_folder(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    capsys.readouterr()
    args = ["train", "--quiet", f"run.out_dir={out}", f"model.weights={tiny_weights}",
            "grpo.group_size=10000000", "run.threads=1"]  # fmt: skip
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GB free on cpu" in err and not out.exists()
