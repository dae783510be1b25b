"""The package layout: imports point down the floors, and no module imports itself back.

Every ``import`` of every module under ``src/cgrpo`` is read with :mod:`ast` (lazy imports
inside functions included), so a new arrow that runs up a floor fails here, naming it.
The floors are the table in README.md ("Where things are") and docs/trainer.md. The same
reading checks the house rule of keyword-only arguments past the third.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cgrpo"

#: package (or top-level module) -> floor; a module may import its own package and any
#: package on a lower floor, nothing on its own floor or above.
FLOORS = {
    "io": 0,
    "config": 1,
    "world": 2,
    "data": 3,
    "policies": 4,
    "rewards": 4,
    "sampling": 5,
    "method": 6,
    "run": 7,
    "eval": 8,
    "train": 9,
    "experiments": 10,
    "cli": 10,
    "docs": 10,
    "__main__": 11,
    "__init__": 0,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    """The cgrpo modules ``path`` imports (``from cgrpo.x import y`` counts ``cgrpo.x.y``
    when that is a module, else ``cgrpo.x``)."""
    mods = _modules()
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cgrpo"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] != "cgrpo":
                continue
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
    return {m for m in found if m in mods}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {name: _imports(path, name) for name, path in _modules().items()}


def test_every_package_has_a_floor():
    unknown = sorted({_package(m) for m in GRAPH} - set(FLOORS))
    assert not unknown, f"packages without a floor in tests/test_layout.py: {unknown}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str):
    here = _package(module)
    up = [
        m
        for m in sorted(GRAPH[module])
        if _package(m) != here and FLOORS[_package(m)] >= FLOORS[here]
    ]
    assert not up, f"{module} (floor {FLOORS[here]}) imports {up}: a floor at or above its own"


def test_no_import_circle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH[m]):
            if n == m or (m == "cgrpo" or n == "cgrpo"):
                continue
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(n) :] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_the_checker_sees_lazy_and_upward_imports(tmp_path: Path):
    """The reader itself: a lazy import inside a function is seen, and an arrow from a
    lower floor to a higher one is one the test above would name."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from cgrpo.train.trainer import GRPOTrainer\n")
    assert _imports(f, "cgrpo.io.m") == {"cgrpo.train.trainer"}
    assert FLOORS[_package("cgrpo.train.trainer")] > FLOORS[_package("cgrpo.io.m")]


def _layout_table(path: Path) -> list[tuple[int, list[str]]]:
    """(floor, packages) of each row of the layout table in ``path`` (README, docs)."""
    text = path.read_text(encoding="utf-8")
    start = text.index("<!-- layout table")
    rows = []
    for line in text[start:].splitlines()[3:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((int(cells[0]), [p.strip(" `") for p in cells[1].split(",")]))
    return rows


def test_readme_and_trainer_doc_show_the_floors_of_this_test() -> None:
    root = SRC.parents[1]
    readme = _layout_table(root / "README.md")
    assert readme == _layout_table(root / "docs" / "trainer.md"), "the two tables differ"
    documented = {pkg: floor for floor, pkgs in readme for pkg in pkgs}
    packages = {p for p in FLOORS if not p.startswith("__")}
    assert set(documented) == packages, sorted(set(documented) ^ packages)
    # the same order of floors (numbers may differ: the table counts from 0 upward)
    for a in packages:
        for b in packages:
            assert (documented[a] < documented[b]) == (FLOORS[a] < FLOORS[b]), (a, b)


def _positional_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameters ``fn`` takes by position, less a leading ``self``/``cls``."""
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def test_keyword_only_past_three_arguments() -> None:
    """The house rule: at most three positional parameters (besides ``self``/``cls``); every
    later one is keyword-only, so that a call cannot pass a setting in the wrong place."""
    offenders = [
        f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name}({', '.join(params)})"
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and len(params := _positional_params(node)) > 3
    ]
    assert not offenders, "more than three positional parameters:\n" + "\n".join(offenders)


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``fn``'s body, its docstring left out."""
    body = fn.body
    doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first = body[1] if doc and len(body) > 1 else body[0]
    return fn.end_lineno - first.lineno + 1


def test_modules_and_functions_stay_small() -> None:
    """The house rule: no module under src/cgrpo over 400 lines, no function body over 80."""
    sources = sorted(SRC.rglob("*.py"))
    long_modules = [
        f"{p.relative_to(SRC.parent)} ({n} lines)"
        for p in sources
        if (n := len(p.read_text().splitlines())) > 400
    ]
    long_functions = [
        f"{p.relative_to(SRC.parent)}:{node.lineno} {node.name} ({n} lines)"
        for p in sources
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := _body_lines(node)) > 80
    ]
    assert not long_modules, "modules over 400 lines:\n" + "\n".join(long_modules)
    assert not long_functions, "function bodies over 80 lines:\n" + "\n".join(long_functions)
