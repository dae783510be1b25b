"""A config is read and checked before torch loads (:mod:`cgrpo.config.lazy`).

Each check runs in a fresh interpreter: this test process has loaded torch long ago.
``torch._C`` (torch's compiled core, imported by ``torch/__init__``) in ``sys.modules``
means torch's body has run; a module registered by ``lazy_import`` alone has not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_every_shipped_train_config_is_read_without_torch() -> None:
    shipped = sorted(str(p) for p in (ROOT / "configs").glob("*_*.yaml"))
    assert shipped, "no shipped configs found"
    out = _python(
        "import sys\n"
        "from cgrpo.config.core import load_config\n"
        "from cgrpo.run.config import EMBEDDED_CONFIG, TrainConfig\n"
        "from cgrpo.eval.config import EvalConfig\n"
        f"paths = [EMBEDDED_CONFIG, *{[p for p in shipped if 'eval_' not in p]!r}]\n"
        "for p in paths:\n"
        "    load_config(TrainConfig, p, ['run.steps=3', 'method.shaping.gamma=0.2'])\n"
        f"for p in {[p for p in shipped if 'eval_' in p]!r}:\n"
        "    load_config(EvalConfig, p, [])\n"
        "print(len(paths), 'torch._C' in sys.modules)\n"
    )
    assert out.returncode == 0, out.stderr
    n, loaded = out.stdout.split()
    assert int(n) >= 3 and loaded == "False", out.stdout


def test_cli_answers_a_bad_key_in_one_line_before_torch() -> None:
    out = _python(
        "import sys\n"
        "from cgrpo.cli import main\n"
        "rc = main(['train', 'bad.key=1'])\n"
        "print(rc, 'torch._C' in sys.modules)\n"
    )
    assert out.stdout.split() == ["2", "False"], (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'bad'" in lines[0], out.stderr


def test_lazy_import_runs_the_module_on_first_attribute(tmp_path: Path) -> None:
    (tmp_path / "probe_mod.py").write_text("import sys\nsys.probe_runs = 1\nvalue = 42\n")
    out = _python(
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from cgrpo.config.lazy import lazy_import\n"
        "m = lazy_import('probe_mod')\n"
        "before = getattr(sys, 'probe_runs', 0)\n"
        "v = m.value\n"
        "again = lazy_import('probe_mod') is m\n"
        "print(before, sys.probe_runs, v, again)\n"
    )
    assert out.stdout.split() == ["0", "1", "42", "True"], (out.stdout, out.stderr)


def test_lazy_import_of_a_missing_module_is_an_import_error() -> None:
    out = _python(
        "from cgrpo.config.lazy import lazy_import\n"
        "try:\n"
        "    lazy_import('no_such_module_cgrpo')\n"
        "except ModuleNotFoundError as e:\n"
        "    print('missing', e.name)\n"
    )
    assert out.stdout.split() == ["missing", "no_such_module_cgrpo"], out.stderr
