"""Training's image grids reach the trackers as images (here TensorBoard), not only as
PNG files: the event file holds an image summary per grid, with the PNG's pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cgrpo.io.run_log import MetricsLog
from cgrpo.train.trainer import GRPOTrainer
from tests.conftest import fast_config


def _images(logdir: Path) -> dict[int, np.ndarray]:
    """step -> pixels of the ``train/samples`` image summaries under ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {logdir}"
    out = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"images": 0})
        acc.Reload()
        if "train/samples" in acc.Tags()["images"]:
            for ev in acc.Images("train/samples"):
                out[ev.step] = np.asarray(Image.open(io.BytesIO(ev.encoded_image_string)))
    return out


def test_training_grids_are_tensorboard_images(tmp_path: Path, tiny_weights: Path) -> None:
    cfg = fast_config(tmp_path, tiny_weights, "run.eval=false", "run.image_every=1")
    GRPOTrainer(cfg).train(quiet=True)  # 2 steps, a grid each
    images = _images(tmp_path / "tensorboard")
    assert sorted(images) == [1, 2]
    for step, pixels in images.items():
        png = np.asarray(Image.open(tmp_path / "images" / f"step_{step:06d}.png"))
        assert pixels.shape == png.shape and np.array_equal(pixels[..., :3], png)


def test_image_goes_nowhere_without_trackers(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, log_with=())
    log.image("x", np.zeros((4, 4, 3), np.uint8), 1)  # no tracker: nothing to send, no error
    log.close()
    assert not (tmp_path / "tensorboard").exists()
