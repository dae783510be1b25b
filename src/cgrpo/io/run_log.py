"""What a run writes for people to look at: metrics (CSV + accelerate trackers), the reward
curves plot, and image grids.

- :class:`MetricsLog`: one row per logged step, appended to ``metrics.csv`` (rewritten only
  when a new column first appears, or once on resume to drop rows after the resume point)
  and sent to accelerate's trackers (``Accelerator(log_with=...)``: TensorBoard by default,
  W&B / MLflow / Aim / ... by ``run.log_with``); :meth:`MetricsLog.image` sends an image
  grid to the trackers that take images (TensorBoard, W&B, Aim, ClearML, SwanLab).
- :func:`plot_curves`: each reward's mean +- std along training and the relation shares.
- :func:`save_grid`: one row per group: its reference, then its samples (PNG; the pixels
  are returned for the trackers).

Every file is written through :func:`cgrpo.io.atomic.atomic_write` (temp file + rename),
except the CSV's appended lines (a crash can at most cut the last line, which resume drops).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgrpo.io.atomic import atomic_write

__all__ = ["MetricsLog", "plot_curves", "save_grid", "read_metrics"]


def read_metrics(path: Path, up_to_step: float | None = None) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats (rows that do not parse are dropped: a cut
    last line), optionally only those with ``step <= up_to_step``."""
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                row = {k: float(v) for k, v in r.items() if k is not None and v not in ("", None)}
            except ValueError:
                continue
            if "step" in row and (up_to_step is None or row["step"] <= up_to_step):
                rows.append(row)
    return rows


class MetricsLog:
    """CSV rows + accelerate trackers, one row per logged step.

    ``resume_step``: the rows after it (from an interrupted run) are dropped, once.
    ``write=False`` on the non-main processes: nothing is written. ``accelerator``: the run's
    ``accelerate.Accelerator`` made with ``log_with`` (one is made here when None)."""

    def __init__(
        self,
        run_dir: Path,
        resume_step: int = 0,
        write: bool = True,
        *,
        log_with: Sequence[str] = ("tensorboard",),
        accelerator: Any | None = None,
    ) -> None:
        self.path = run_dir / "metrics.csv"
        self.write = write
        self.rows: list[dict[str, float]] = []
        self.keys: list[str] = []
        self.tracker = None
        if resume_step and self.path.exists():
            self.rows = read_metrics(self.path, resume_step)
            for r in self.rows:
                self.keys += [k for k in r if k not in self.keys]
        if not write:
            return
        self._rewrite()
        if log_with:
            self.tracker = _trackers(run_dir, list(log_with), resume_step, accelerator=accelerator)

    def log(self, row: dict[str, float]) -> None:
        """Append one row (its ``step`` is the x of every tracker)."""
        self.rows.append(row)
        if not self.write:
            return
        new = [k for k in row if k not in self.keys]
        if new or not self.path.exists():
            self.keys += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)
        if self.tracker is not None:
            values = {k: v for k, v in row.items() if k != "step"}
            self.tracker.log(values, step=int(row["step"]))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Send one image (H, W, 3 uint8, e.g. :func:`save_grid`'s) to every tracker that
        takes images, at ``step``; the others (MLflow, Comet, DVCLive, Trackio through
        accelerate) get none: the PNG file is the record."""
        if not self.write or self.tracker is None:
            return
        for t in self.tracker.trackers:
            name = getattr(t, "name", "")
            if name == "tensorboard":
                t.log_images({tag: image[None]}, step=step, dataformats="NHWC")
            elif name in ("wandb", "swanlab"):
                t.log_images({tag: [image]}, step=step)
            elif name in ("aim", "clearml"):
                t.log_images({tag: image}, step=step)

    def _rewrite(self) -> None:
        if not self.keys:
            self.path.unlink(missing_ok=True)
            return

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.keys)
                w.writeheader()
                w.writerows(self.rows)

        atomic_write(self.path, write)

    def close(self) -> None:
        if self.tracker is not None:
            # each tracker's own finish: accelerate's end_training() would also destroy the
            # process group, which the final evaluation still needs
            for t in self.tracker.trackers:
                t.finish()
            self.tracker = None


def _trackers(run_dir: Path, log_with: list[str], resume_step: int, *, accelerator: Any) -> Any:
    """An accelerator with ``log_with`` trackers started, writing under ``run_dir``
    (TensorBoard: ``run_dir/tensorboard``, from ``resume_step`` on)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if accelerator is None:
        project = ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(run_dir / "tensorboard")
        )
        accelerator = Accelerator(cpu=True, log_with=log_with, project_config=project)
    kwargs = {"tensorboard": {"purge_step": resume_step or None}}
    accelerator.init_trackers(".", init_kwargs=kwargs)
    return accelerator


def plot_curves(rows: list[dict[str, float]], path: Path, names: Sequence[str]) -> None:
    """Each reward's training mean +- std (``reward/<name>/mean|std``) and the relation
    shares, as one PNG with a panel per reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if all(f"reward/{n}/mean" in r for n in names)]
    if not rows or not names:
        return
    steps = [r["step"] for r in rows]
    shares = [k for k in ("synergy", "conflict", "joint_failure") if f"share/{k}" in rows[0]]
    panels = len(names) + (1 if shares else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        m = np.array([r[f"reward/{name}/mean"] for r in rows])
        s = np.array([r.get(f"reward/{name}/std", 0.0) for r in rows])
        ax.plot(steps, m)
        ax.fill_between(steps, m - s, m + s, alpha=0.2)
        ax.set_title(f"{name} reward")
        ax.set_xlabel("step")
    if shares:
        ax = axes[0][-1]
        for k in shares:
            ax.plot(steps, [r[f"share/{k}"] for r in rows], label=k)
        ax.set_title("share of samples")
        ax.legend()
        ax.set_xlabel("step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def save_grid(
    path: Path, references: torch.Tensor, images: torch.Tensor, *, group_size: int
) -> np.ndarray:
    """One row per group: its reference, then its ``group_size`` samples (PNG); returns
    the PNG's pixels (H, W, 3 uint8).

    ``references``: (B, 3, h, w), one per sample as the rewards see them
    (:func:`cgrpo.data.references.reward_view`); a group's first is drawn."""
    from PIL import Image

    groups = images.shape[0] // group_size
    refs = references[::group_size][:groups]
    h, w = images.shape[-2:]
    if refs.shape[-2:] != (h, w):
        refs = torch.nn.functional.interpolate(refs, size=(h, w), mode="bilinear")
    rows = []
    for g in range(groups):
        tiles = [refs[g], torch.ones(3, h, 2)] + list(images[g * group_size : (g + 1) * group_size])
        rows.append(torch.cat(tiles, dim=-1))
    grid = torch.cat(rows, dim=-2).clamp(0, 1)
    arr = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    scale = max(1, 256 // h)
    img = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return np.asarray(img)
