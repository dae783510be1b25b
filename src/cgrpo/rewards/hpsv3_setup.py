"""``cgrpo setup hpsv3``: the HPS-v3 worker's own virtualenv, made by one command.

The ``hpsv3`` package pins ``transformers==4.45.2`` (this project needs 5.x), so the
``hpsv3`` reward runs it in a worker process of a separate interpreter
(:mod:`cgrpo.rewards.hpsv3`, option ``python``). This module makes that interpreter:

1. ``python -m venv DIR`` (with this interpreter), unless ``DIR`` already is a venv;
2. ``DIR/bin/python -m pip install hpsv3`` (``package``; extra ``pip_args`` such as
   ``--index-url`` for a mirror or ``--no-index --find-links WHEELS`` offline);
3. imports ``hpsv3`` there (``HPSv3RewardInferencer``): the check the worker makes;
4. with ``qwen``: writes ``DIR/HPSv3_7B.local.yaml``, the package's
   ``config/HPSv3_7B.yaml`` with ``model_name_or_path`` pointing at the local
   Qwen2-VL-7B-Instruct folder (nothing is downloaded at run time);

and returns the lines of the reward's config that use it. Every failure is one line
(:class:`HPSv3SetupError`) naming the step and the fix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cgrpo.io.atomic import atomic_write

__all__ = ["HPSv3SetupError", "setup_hpsv3"]

#: prints where the installed package keeps its model config
_PROBE = (
    "import json, pathlib, hpsv3\n"
    "from hpsv3 import HPSv3RewardInferencer\n"
    "root = pathlib.Path(hpsv3.__file__).parent\n"
    "print(json.dumps({'config': str(root / 'config' / 'HPSv3_7B.yaml')}))\n"
)


class HPSv3SetupError(ValueError):
    """A step of the HPS-v3 worker set-up failed; the message says which and how to fix it."""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: list[str], step: str, fix: str) -> str:
    """Run ``cmd``; its stdout, or one line with the last line of its error output."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise HPSv3SetupError(f"cgrpo setup hpsv3: {step} failed ({lines[-1].strip()}); {fix}")
    return done.stdout


def _local_config(package_config: Path, qwen: Path, out: Path) -> Path:
    """The package's model config with ``model_name_or_path`` set to ``qwen`` (written
    whole, temp file + rename)."""
    if not package_config.is_file():
        raise HPSv3SetupError(
            f"cgrpo setup hpsv3: the installed package has no '{package_config}'; install the "
            "hpsv3 release that ships config/HPSv3_7B.yaml"
        )
    text = package_config.read_text(encoding="utf-8")
    key = re.compile(r"^(\s*model_name_or_path\s*:).*$", re.MULTILINE)
    if not key.search(text):
        raise HPSv3SetupError(
            f"cgrpo setup hpsv3: '{package_config}' has no model_name_or_path key to point at "
            f"'{qwen}'; write the config by hand (docs/rewards.md)"
        )
    local = key.sub(lambda m: f"{m.group(1)} {json.dumps(str(qwen))}", text, count=1)
    atomic_write(out, lambda tmp: tmp.write_text(local, encoding="utf-8"))
    return out


def setup_hpsv3(
    venv: str | Path,
    *,
    qwen: str | Path | None = None,
    package: str = "hpsv3",
    pip_args: tuple[str, ...] = (),
) -> list[str]:
    """Make (or reuse) the worker venv ``venv`` with ``package`` installed and importable;
    with ``qwen`` (the local Qwen2-VL-7B-Instruct folder) also its local model config.
    Returns the YAML option lines of a ``kind: hpsv3`` reward that use them."""
    venv = Path(venv).absolute()
    python = _venv_python(venv)
    if qwen is not None and not (Path(qwen) / "config.json").is_file():
        raise HPSv3SetupError(
            f"cgrpo setup hpsv3: --qwen '{qwen}' holds no config.json; download "
            "Qwen/Qwen2-VL-7B-Instruct there first (docs/rewards.md)"
        )
    if venv.exists() and not python.is_file():
        raise HPSv3SetupError(
            f"cgrpo setup hpsv3: '{venv}' exists and is not a virtualenv (no {python.name}); "
            "pass a new folder or an existing venv"
        )
    if not python.is_file():
        _run([sys.executable, "-m", "venv", str(venv)], "creating the virtualenv",
             "check that this Python has the venv module (python3-venv)")  # fmt: skip
    pip = [str(python), "-m", "pip", "install", package, *pip_args]
    _run(pip, f"pip install {package}",
         "pass --pip-arg for an index or wheels (e.g. --pip-arg=--index-url=URL)")  # fmt: skip
    probe = _run([str(python), "-c", _PROBE], "importing hpsv3 in the new virtualenv",
                 f"repair it with {python} -m pip install --force-reinstall {package}")  # fmt: skip
    lines = [f"python: {python}"]
    if qwen is not None:
        package_config = Path(json.loads(probe.strip().splitlines()[-1])["config"])
        local = _local_config(package_config, Path(qwen).absolute(), venv / "HPSv3_7B.local.yaml")
        lines.append(f"config_path: {local}")
    return lines
