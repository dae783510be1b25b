"""What a checkpoint hands to the writer: CPU tensors of their own, each copied from the
live tensor (a parameter, its EMA, an optimizer moment, the old policy) one at a time,
never from a clone of all of them on the device; and the line each save prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from cgrpo.io.checkpoint import save_checkpoint
from cgrpo.policies.sharding import cpu_copy
from cgrpo.train import checkpointing, state
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_checkpoint_copies_live_tensors_to_cpu_one_by_one(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["run.steps=1", "run.eval=false", "optim.ema_decay=0.5", "method.objective.kind=nft"]
    trainer = GRPOTrainer(fast_config(tmp_path, tiny_weights, *args, "run.checkpoint_every=0"))
    trainer.train(quiet=True)  # one step: optimizer moments and an EMA that differs
    live = {_storage(v) for v in trainer.policy.trainable_state_dict(copy=False).values()}
    live |= {_storage(e) for e in trainer.state.ema.shadow}
    live |= {_storage(v) for v in trainer.policy.old_state_dict(copy=False).values()}
    live |= {_storage(v) for s in trainer.optimizer.state.values() for v in s.values()}
    ema_values = [e.clone() for e in trainer.state.ema.shadow]

    copied: list[int] = []

    def recording_copy(t: torch.Tensor, keep: bool = True) -> torch.Tensor | None:
        copied.append(_storage(t))
        return cpu_copy(t, keep)

    monkeypatch.setattr(checkpointing, "cpu_copy", recording_copy)
    monkeypatch.setattr(state, "cpu_copy", recording_copy)
    handed: dict = {}

    def writer(directory, step, model, *, state, meta, keep_last, ema_tensors):  # noqa: ANN001, ANN202
        handed.update(model=model, ema=ema_tensors, state=state)
        return save_checkpoint(
            directory, step, model, state=state, meta=meta, keep_last=keep_last,
            ema_tensors=ema_tensors,
        )  # fmt: skip

    monkeypatch.setattr(checkpointing, "save_checkpoint", writer)
    trainer.policy.trainable_state_dict = _no_clone(trainer.policy.trainable_state_dict)
    trainer.policy.old_state_dict = _no_clone(trainer.policy.old_state_dict)
    folder = trainer.save()
    # every parameter, EMA, moment and old weight was copied straight from the live tensor
    trained = {_storage(p) for p in trainer.params}
    assert trained <= set(copied) and set(copied) <= live | trained
    tensors = [*handed["model"].values(), *handed["ema"].values()]
    tensors += [*handed["state"]["ema"], *handed["state"]["old_policy"].values()]
    assert all(t.device.type == "cpu" and _storage(t) not in live for t in tensors)
    # the optimizer state (keyed by name: through get_optimizer_state_dict's cpu_offload,
    # which on a CPU-only run may hand over the CPU tensors themselves)
    moments = handed["state"]["optimizer"]["state"]
    assert set(moments) == set(dict(trainer.policy.model.named_parameters()))
    assert all(v.device.type == "cpu" for s in moments.values() for v in s.values())
    # the EMA weights were swapped in and out in place: back where they were
    assert all(torch.equal(a, b) for a, b in zip(ema_values, trainer.state.ema.shadow, strict=True))
    params = dict(trainer.policy.model.named_parameters())
    for (name, p), e in zip(params.items(), ema_values, strict=True):
        assert torch.equal(handed["ema"][name], e) and torch.equal(handed["model"][name], p)
    assert folder is not None and (folder / "ema.safetensors").is_file()


def _no_clone(method):  # noqa: ANN001, ANN202
    """The policy's state dict, refusing a cloned one (copy=True) while checkpointing."""

    def state_dict(copy: bool = True):  # noqa: ANN202
        assert not copy, "a checkpoint must not clone the weights on the device"
        return method(copy=False)

    return state_dict


def test_each_save_prints_its_folder_and_size(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fast_config(tmp_path / "run", tiny_weights, "run.eval=false", "optim.ema_decay=0.5")
    GRPOTrainer(cfg).train(quiet=True)  # run.steps=2, a checkpoint each step
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("checkpoint ")]
    assert len(lines) == 2
    folder = tmp_path / "run" / "checkpoints" / "step_000002"
    m = re.fullmatch(rf"checkpoint {re.escape(str(folder))}: ([\d.]+) KB \((.*)\)", lines[1])
    assert m, lines[1]
    sizes = {f.name: f.stat().st_size for f in folder.iterdir()}
    assert float(m.group(1)) == round(sum(sizes.values()) / 1000, 1)
    unit = {"B": 1, "KB": 1e3, "MB": 1e6}
    listed = {}
    for part in m.group(2).split(", "):
        name, size, u = part.split(" ")
        listed[name] = float(size) * unit[u]
    assert set(listed) == {"ema.safetensors", "model.safetensors", "state.pt"}
    for name, size in listed.items():
        assert size == pytest.approx(sizes[name], abs=50)


@pytest.mark.parametrize(
    ("size", "text"), [(512, "512 B"), (1500, "1.5 KB"), (8.4e9, "8.4 GB"), (2.5e12, "2500.0 GB")]
)
def test_size_units(size: float, text: str) -> None:
    assert checkpointing._human(size) == text
