"""A device setting checked before anything loads: a misspelt device, or a GPU this
machine does not have, is one :class:`~cgrpo.io.errors.DeviceError` naming the key, the
value and the devices there are, instead of torch's traceback at the first tensor."""

from __future__ import annotations

import re

import torch

from cgrpo.io.errors import DeviceError

__all__ = ["available_devices", "check_device"]

_FORM = re.compile(r"^(cpu|cuda|mps|xpu|meta)(:\d+)?$")


def available_devices() -> list[str]:
    """The devices this process can use: ``cpu``, ``cuda:0`` ... , ``mps`` when present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(value: str, key: str) -> str:
    """``value`` when it names a usable device (``cpu``, ``cuda``, ``cuda:N``, ``mps``);
    else :class:`DeviceError` naming ``key``. ``cuda`` without ``:N`` means the current GPU
    (under accelerate each process is given its own)."""
    have = available_devices()
    fix = f"devices here: {', '.join(have)}"
    if not isinstance(value, str) or not _FORM.match(value.strip()):
        raise DeviceError(
            f"{key}={value!r} is not a device; write cpu, cuda, cuda:N or mps ({fix})"
        )
    kind, _, index = value.strip().partition(":")
    if kind in ("cpu", "meta"):
        return value
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"{key}={value}: this machine has no usable GPU (torch {torch.__version__}, "
                f"CUDA {'built' if torch.backends.cuda.is_built() else 'not built'}); set "
                f"{key}=cpu, or install a CUDA build of torch on a GPU machine"
            )
        if index and int(index) >= count:
            raise DeviceError(f"{key}={value}: there are {count} GPU(s) here; {fix}")
        return value
    if kind not in have:
        raise DeviceError(f"{key}={value}: no {kind} device on this machine; {fix}")
    return value
