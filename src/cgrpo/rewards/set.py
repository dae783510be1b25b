"""The run's named, weighted rewards scored together (TRL's ``reward_funcs`` +
``reward_weights``).

The ``rewards:`` section of a config is read into :class:`~cgrpo.rewards.spec.RewardSpec`
entries by :func:`cgrpo.rewards.spec.parse_rewards` (no torch); :meth:`RewardSet.build`
checks each entry's options against its factory's signature (importing its backend) and
builds them all.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from cgrpo.data.references import ReferenceBatch, References, reward_view
from cgrpo.io.devices import check_device
from cgrpo.rewards.base import REWARDS, RewardModel, make_reward_on, reads_references
from cgrpo.rewards.spec import RewardSpec

__all__ = ["RewardSet"]


def _accepted_options(factory: Any) -> set[str] | None:
    """The option names ``factory`` takes; a class's ``__init__`` that passes ``**options``
    on is followed to its bases' (None: anything goes, a function or base with ``**``)."""
    inits = [factory]
    if inspect.isclass(factory):
        inits = [c.__init__ for c in factory.__mro__ if c is not object and "__init__" in vars(c)]
    names: set[str] = set()
    for f in inits:
        params = inspect.signature(f).parameters
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names - {"self"}
    return None


def _check_options(spec: RewardSpec, where: str) -> None:
    """Option names against the factory's signature (and, for a class that passes options
    on, its bases'), before anything is built."""
    valid = _accepted_options(REWARDS.get(spec.kind))
    if valid is None:
        return
    bad = [k for k in spec.options if k not in valid]
    if bad:
        shown = ", ".join(sorted(valid - {"device"})) or "(none)"
        raise ValueError(
            f"{where}.{spec.name}: reward {spec.kind!r} has no option(s) {bad}; "
            f"its options: {shown}"
        )


class RewardSet:
    """Named reward models with their static weights, scored together."""

    def __init__(self, models: Mapping[str, RewardModel], weights: Mapping[str, float]) -> None:
        if not models:
            raise ValueError("a RewardSet needs at least one reward")
        if set(models) != set(weights):
            raise ValueError(f"rewards {sorted(models)} and weights {sorted(weights)} differ")
        self.models = dict(models)
        self.weights = {k: float(weights[k]) for k in models}

    @classmethod
    def build(cls, specs: list[RewardSpec], device: str, where: str = "rewards") -> RewardSet:
        """Every reward of ``specs`` on ``device`` (unless its options name one); all
        option names and devices are checked before the first model is built."""
        for s in specs:
            _check_options(s, where)
            if isinstance(s.options.get("device"), str):  # (a DeviceError naming the key)
                check_device(s.options["device"], f"{where}.{s.name}.device")
        models = {s.name: make_reward_on(s.kind, device, **s.options) for s in specs}
        return cls(models, {s.name: s.weight for s in specs})

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, prompts: list[str], references: References
    ) -> dict[str, torch.Tensor]:
        """Each reward of a batch, as float32 CPU tensors, by name (in config order).

        Rewards read the square view of each image's reference
        (:func:`cgrpo.data.references.reward_view`). When an image has several references
        (UNO's multi-subject pairs), a reward that reads references (true unless it declares
        ``uses_references = False``, :func:`~cgrpo.rewards.base.reads_references`) scores it
        against each and gets the mean.
        """
        view = reward_view(references).to(images.device)
        multi = isinstance(references, ReferenceBatch) and max(references.counts) > 1
        out = {}
        for name, m in self.models.items():
            try:
                out[name] = _score_one(
                    m, images, prompts, references=references, view=view, multi=multi
                )
            except Exception as e:  # its type kept; the note names the reward
                _add_note(e, f"reward {name!r}")
                raise
        return out


def _score_one(
    m: RewardModel,
    images: torch.Tensor,
    prompts: list[str],
    *,
    references: References,
    view: torch.Tensor,
    multi: bool,
) -> torch.Tensor:
    """One reward of a batch (see :meth:`RewardSet.score`)."""
    if not multi or not reads_references(m):
        return m(images, prompts, view).float().cpu()
    assert isinstance(references, ReferenceBatch)
    total = torch.zeros(len(prompts))
    for k in range(max(references.counts)):
        rows, ref_k = references.views(k)
        score = m(images[rows.to(images.device)], [prompts[i] for i in rows.tolist()],
                  ref_k.to(images.device))  # fmt: skip
        total[rows] += score.float().cpu()
    return total / torch.tensor(references.counts, dtype=torch.float32)


def _add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)`` (PEP 678; written out on Python 3.10, which lacks it)."""
    e.__notes__ = [*getattr(e, "__notes__", ()), note]
