"""The embedded generator's weights file: float16 safetensors with the architecture (and,
for bases pretrained since the subject split became a setting, the split) in its metadata.

:func:`save_generator` writes one, :func:`load_generator` reads one back into a
:class:`~cgrpo.world.generator.TinyKontext`, and :func:`read_metadata` reads only the
header (what :func:`cgrpo.world.split.read_split` needs). A missing, folder or unreadable
path is one line naming it and what to point ``model.weights`` at.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cgrpo.io.atomic import atomic_write
from cgrpo.world.generator import GeneratorConfig, TinyKontext

__all__ = ["DEFAULT_WEIGHTS", "load_generator", "read_metadata", "save_generator"]

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "base.safetensors"

_FIX = "point model.weights at a file `cgrpo pretrain` wrote (or leave it unset for the base)"


def save_generator(model: TinyKontext, path: str | Path, extra: dict | None = None) -> None:
    """Write the generator's weights (float16) and architecture atomically; ``extra``
    entries join the metadata as text."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "config": json.dumps(model.config.to_dict()),
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _checked(path: str | Path | None) -> Path:
    """``path`` (default: the shipped base) if it is a file, else the error that says why."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if path.is_dir():
        raise IsADirectoryError(
            f"embedded generator weights: '{path}' is a folder, not a safetensors file; {_FIX}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"embedded generator weights not found at {path}. The base model ships with the "
            "package (cgrpo/world/weights/base.safetensors); re-create it with `cgrpo pretrain` "
            "or pass the path of a file it wrote."
        )
    return path


def _open(path: Path, *, tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            out = {k: f.get_tensor(k).float() for k in f.keys()} if tensors else {}
    except Exception as exc:  # SafetensorError, OSError: not a safetensors file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read generator weights '{path}' ({first}); {_FIX}") from exc
    if "config" not in meta:
        raise ValueError(f"'{path}' has no generator config in its metadata; {_FIX}")
    return meta, out


def read_metadata(path: str | Path | None = None) -> dict[str, str]:
    """The metadata of a weights file (default: the shipped base), without its tensors."""
    return _open(_checked(path), tensors=False)[0]


def load_generator(path: str | Path | None = None) -> TinyKontext:
    """Load a generator written by :func:`save_generator` (default: the shipped base model)."""
    path = _checked(path)
    meta, tensors = _open(path, tensors=True)
    try:
        model = TinyKontext(GeneratorConfig(**json.loads(meta["config"])))
        model.load_state_dict(tensors)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"generator weights '{path}' do not fit its config ({first}); {_FIX}"
        ) from exc
    return model
