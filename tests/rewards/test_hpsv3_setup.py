"""cgrpo setup hpsv3: the worker's virtualenv made by one command, and a worker that cannot
start named in one line. A stand-in ``hpsv3`` wheel (the real API, a model config under
``hpsv3/config/``) is installed offline into a fresh venv."""

from __future__ import annotations

import base64
import hashlib
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from cgrpo.cli import main
from cgrpo.rewards import make_reward
from cgrpo.rewards.hpsv3 import HPSv3Error
from tests.rewards.test_rewards_real import _FAKE_HPSV3

CONFIG = "model_name_or_path: Qwen/Qwen2-VL-7B-Instruct\nrank: 64\n"


def wheel(folder: Path, init: str) -> Path:
    """A pure-python wheel of a package ``hpsv3`` with ``init`` as its __init__.py and the
    model config the real package ships (config/HPSv3_7B.yaml)."""
    files = {
        "hpsv3/__init__.py": init,
        "hpsv3/config/HPSv3_7B.yaml": CONFIG,
        "hpsv3-0.0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: hpsv3\nVersion: 0.0.1\n",
        "hpsv3-0.0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("hpsv3-0.0.1.dist-info/RECORD,,")
    files["hpsv3-0.0.1.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = folder / "hpsv3-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def setup_args(venv: Path, package: Path, *extra: str) -> list[str]:
    offline = ["--pip-arg=--no-index", "--pip-arg=--no-deps", "--pip-arg=--quiet"]
    return ["setup", "hpsv3", "--venv", str(venv), "--package", str(package), *offline, *extra]


def test_setup_makes_a_venv_whose_worker_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The venv gets the package, the local config points at the Qwen folder (the rest of
    the package's config kept), and the printed options start a worker that scores."""
    qwen = tmp_path / "Qwen2-VL-7B-Instruct"
    qwen.mkdir()
    (qwen / "config.json").write_text("{}")
    venv = tmp_path / "hps"
    assert main(setup_args(venv, wheel(tmp_path, _FAKE_HPSV3), "--qwen", str(qwen))) == 0
    out = capsys.readouterr().out
    python, config = venv / "bin" / "python", venv / "HPSv3_7B.local.yaml"
    assert f"python: {python}" in out and f"config_path: {config}" in out
    assert config.read_text() == f'model_name_or_path: "{qwen}"\nrank: 64\n'
    ckpt = tmp_path / "HPSv3.safetensors"
    ckpt.write_bytes(b"x")
    # the stand-in and the worker read images with PIL / numpy: this venv's own copies
    site = sysconfig.get_paths()["purelib"]
    reward = make_reward(
        "hpsv3", checkpoint_path=str(ckpt), config_path=str(config), python=str(python),
        env={"PYTHONPATH": site}, device="cpu",
    )  # fmt: skip
    try:
        scores = reward(torch.ones(2, 3, 8, 8), ["ab", "abc"], None)
    finally:
        reward.close()
    torch.testing.assert_close(scores, torch.tensor([3.0, 4.0]), atol=1e-3, rtol=0)


def test_setup_failures_are_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Qwen config.json; a folder that is not a venv; a package that installs but does
    not import: exit 2, one line naming the step."""
    good = wheel(tmp_path, _FAKE_HPSV3)
    cases = [
        (setup_args(tmp_path / "a", good, "--qwen", str(tmp_path)), "holds no config.json"),
        (setup_args(tmp_path, good), "is not a virtualenv"),
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    bad = wheel(broken, "raise ImportError('needs transformers==4.45.2')\n")
    cases.append((setup_args(tmp_path / "b", bad), "importing hpsv3 in the new virtualenv failed"))
    for args, needle in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert "needs transformers==4.45.2" in err


def test_a_worker_that_cannot_import_hpsv3_is_one_line(tmp_path: Path) -> None:
    """python= an interpreter without hpsv3: one HPSv3Error (a ValueError, so the CLI
    prints it as one line) naming the interpreter and the set-up command."""
    ckpt = tmp_path / "HPSv3.safetensors"
    ckpt.write_bytes(b"x")
    with pytest.raises(HPSv3Error) as err:
        make_reward("hpsv3", checkpoint_path=str(ckpt), python=sys.executable, device="cpu")
    text = str(err.value)
    assert "\n" not in text and sys.executable in text and "cgrpo setup hpsv3" in text
    assert isinstance(err.value, ValueError)
