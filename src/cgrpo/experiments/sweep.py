"""Sweeps: the many training runs of one experiment (arms x seeds), each in its own
process with one torch thread, ``jobs`` at a time, each logging to its folder's
``train.log``. The benchmarks' runs are resumable run folders, so a stopped sweep is
continued by starting it again."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["run_logged", "run_all"]


def run_logged(cmd: list[str], run_dir: Path, label: str, *, threads: int = 1) -> None:
    """Run ``cmd`` with ``OMP_NUM_THREADS=threads``, its output appended to
    ``run_dir/train.log``; ``SystemExit`` naming the run and its log when it fails."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    with open(run_dir / "train.log", "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"{label} failed (exit {code}): see {run_dir / 'train.log'}")
    print(f"[done] {label} in {time.time() - t0:.0f} s", flush=True)


def run_all(calls: list[Callable[[], None]], jobs: int) -> None:
    """Each of ``calls``, ``jobs`` at a time, in order. A failed call does not stop the
    others (a long unattended sweep keeps going); the first failure is raised once all
    have run. Ctrl-C cancels the calls not yet started and is raised at once."""
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(c) for c in calls]
        try:
            for f in futures:
                try:
                    f.result()
                except (Exception, SystemExit) as e:
                    failures.append(e)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if failures:
        raise failures[0]
