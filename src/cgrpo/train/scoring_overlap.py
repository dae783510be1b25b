"""Scoring a step's images while the rest of the step is still being sampled.

With ``sampler.overlap_rewards: true`` the rollout samples its micro-batches
(``grpo.micro_batch_size``) one after another (:func:`cgrpo.sampling.rollout.sample_groups`'s
``on_chunk``); as each is finished it is decoded here, on the training thread, and handed
to one worker thread that scores it with the run's rewards while the next micro-batch is
sampled. A reward that waits (a server, a VLM judge over HTTP, a reward model on another
GPU) then costs only what is left after the last micro-batch. The rollout draws the same
noise in the same order either way, so the images are the same; the scores are those of
the same micro-batches scored after the rollout, and differ from one whole-batch call only
by a reward's batch-size rounding (tests/train/test_scoring_overlap.py).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from cgrpo.data.references import References
from cgrpo.io.interrupts import interruptible
from cgrpo.rewards.http_json import Cancel
from cgrpo.rewards.set import RewardSet

__all__ = ["OverlappedScoring"]


class OverlappedScoring:
    """The ``on_chunk`` callback of a rollout: decode each finished chunk, score it on a
    worker thread; :meth:`result` gives the whole rollout's images and scores, in order.

    ``references`` and ``prompts``: one per sample of this process's rollout."""

    def __init__(
        self,
        decode: Callable[[torch.Tensor], torch.Tensor],
        rewards: RewardSet,
        *,
        references: References,
        prompts: list[str],
    ) -> None:
        self.decode, self.rewards = decode, rewards
        self.references, self.prompts = references, prompts
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cgrpo-rewards")
        self._cancel = Cancel()  # the worker's server requests, made before or after a stop
        self._jobs: list[tuple[torch.Tensor, Future[dict[str, torch.Tensor]]]] = []

    def __call__(self, rows: slice, rewarded: torch.Tensor) -> None:
        images = self.decode(rewarded)
        refs = self.references[rows].to(images.device)
        job = self._pool.submit(self._score, images, self.prompts[rows], refs)
        self._jobs.append((images, job))

    def _score(
        self, images: torch.Tensor, prompts: list[str], refs: References
    ) -> dict[str, torch.Tensor]:
        with self._cancel.scope():  # (in the worker thread)
            return self.rewards.score(images, prompts, refs)

    def result(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """All chunks' images and their rewards by name (waits for the last chunk); a
        reward's error is raised here, and the chunks still scoring are abandoned."""
        try:
            with interruptible():  # a stop signal abandons the wait, and the requests
                parts = [(images, job.result()) for images, job in self._jobs]
        except BaseException:  # StopRequested, or one chunk's error: drop the others
            self.close(abandon=True)
            raise
        self.close()
        if not parts:
            raise RuntimeError("the rollout handed no samples to the reward scoring")
        images = torch.cat([p[0] for p in parts])
        return images, {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}

    def close(self, abandon: bool = False) -> None:
        """Stop the worker (chunks not started yet are dropped); ``abandon``: without
        waiting for the chunk in flight, whose server requests are cancelled (also those
        it has yet to make)."""
        self._pool.shutdown(wait=False, cancel_futures=True)  # no queued chunk starts now
        if abandon:
            self._cancel.cancel()
        self._pool.shutdown(wait=not abandon)
