"""Download-free rewards for the embedded world: identity ("DINO-Seg") and prompt following.

Both rewards look only at pixels, the reference image and the prompt text; they never call
the renderer and never see its hidden state. This module gathers the public names of the
three parts:

- :mod:`cgrpo.rewards.embedded_segment`: the shared machinery: subject segmentation
  (:func:`segment_subject`), statistics (:func:`subject_stats`), the presence gate
  (:func:`presence_score`) and the canonical crops (:func:`canonical_crops`);
- :mod:`cgrpo.rewards.embedded_identity`: ``embedded_identity``
  (:class:`EmbeddedIdentityReward`), ``identity = P * S^0.4 * C^0.3 * T^0.3``;
- :mod:`cgrpo.rewards.embedded_prompt`: ``embedded_prompt`` (:class:`EmbeddedPromptReward`),
  ``prompt = P * mean(P and the terms of the attributes the prompt mentions)``.

See the class docstrings and ``docs/rewards_embedded.md`` for the exact formulas and the
known limits. The mask constants (``MASK_THRESHOLD``, ...) live in
:mod:`cgrpo.rewards.embedded_segment`.
"""

from cgrpo.rewards.embedded_identity import EmbeddedIdentityReward
from cgrpo.rewards.embedded_prompt import EmbeddedPromptReward
from cgrpo.rewards.embedded_segment import (
    SubjectStats,
    canonical_crops,
    estimate_background,
    presence_score,
    segment_subject,
    subject_stats,
)

__all__ = [
    "EmbeddedIdentityReward",
    "EmbeddedPromptReward",
    "SubjectStats",
    "canonical_crops",
    "estimate_background",
    "presence_score",
    "segment_subject",
    "subject_stats",
]
