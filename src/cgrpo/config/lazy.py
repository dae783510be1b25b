"""Torch on first use, so that a config is read and checked without loading it.

The strategy families (shaping, weighting, schedule, objective) are config sections and
tensor code at once: their classes are what ``TrainConfig`` validates, their methods what
the trainer calls. A module that defines such a class imports torch as::

    torch = lazy_import("torch")

and type-only names (``Tensor``) under ``typing.TYPE_CHECKING``. The module object is
real; its body runs on the first attribute access (:class:`importlib.util.LazyLoader`),
so ``cgrpo train bad.key=1`` answers before torch loads (``tests/config/test_lazy.py``
checks that reading every shipped config leaves torch unloaded). Where torch is already
loaded, the loaded module is returned.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy_import"]


def lazy_import(name: str) -> ModuleType:
    """The module ``name``, loaded on its first attribute access (already loaded: as is)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
