"""The layout of the library: one package per stage, imports pointing one way, no luigi inside.

Walks ``calibflow/`` with ``ast`` (every import counts: module level, inside functions and under
``TYPE_CHECKING``), so a cycle or a luigi import cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "calibflow"
STAGES = ("io", "prep", "binning", "fit", "tables", "export", "toys", "kernels", "ops", "kde")
MAX_TOP_MODULES = 8


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module and package of the library."""
    out = {}
    for path in LIBRARY.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of ``path`` names (``from m import x`` gives m and m.x)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> library modules it imports (packages count only where named themselves)."""
    files = module_files()
    return {m: {n for n in imported_names(p) if n in files and n != m} for m, p in files.items()}


def package_of(module: str) -> str:
    """``calibflow.fit.models`` -> ``calibflow.fit``; a top-level module is its own unit."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Import graph between the units of :func:`package_of` (the bare ``calibflow`` package left out)."""
    out: dict[str, set[str]] = {package_of(m): set() for m in graph if m != "calibflow"}
    for m, deps in graph.items():
        out.setdefault(package_of(m), set()).update(
            package_of(d) for d in deps if d != "calibflow" and package_of(d) != package_of(m))
    return out


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed path [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_graph_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from calibflow.plan import Plan\n"
                   "def f():\n    import calibflow.fit.models\n    from calibflow.binning import scheme\n")
    names = imported_names(src)
    assert {"calibflow.plan", "calibflow.fit.models", "calibflow.binning.scheme"} <= names


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_packages_import_one_way() -> None:
    """Stages depend on earlier stages only: no cycle between packages (a top-level module is one unit)."""
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, f"import cycle between packages: {' -> '.join(cycle or [])}"


def test_kernels_import_no_stage() -> None:
    """The numba kernels sit below every stage: they may use the expression language, nothing else."""
    graph = import_graph()
    for m, deps in graph.items():
        if m.startswith("calibflow.kernels"):
            outside = {d for d in deps if not d.startswith("calibflow.kernels") and d != "calibflow.expr"}
            assert not outside, f"{m} imports {sorted(outside)}"


def test_no_luigi_and_no_tasks_inside_the_library() -> None:
    for module, path in module_files().items():
        bad = {n for n in imported_names(path) if n.split(".")[0] in ("luigi", "b2luigi", "tasks")}
        assert not bad, f"{module} imports {sorted(bad)}: the library must not depend on the task layer"


def test_one_package_per_stage_and_few_top_modules() -> None:
    top = sorted(p.stem for p in LIBRARY.glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in calibflow/: {top}"
    for stage in STAGES:
        assert (LIBRARY / stage / "__init__.py").is_file(), f"calibflow/{stage}/ is missing"


@pytest.mark.parametrize("stage", STAGES)
def test_package_docstring_says_what_the_stage_does(stage: str) -> None:
    """3-5 lines (plus the summary line) naming what the stage takes and gives and the module to open first;
    nothing else in ``__init__.py``, so importing one module never imports its siblings."""
    tree = ast.parse((LIBRARY / stage / "__init__.py").read_text())
    doc = ast.get_docstring(tree)
    assert doc, f"calibflow/{stage}/__init__.py has no docstring"
    assert len(tree.body) == 1, f"calibflow/{stage}/__init__.py holds code besides its docstring"
    lines = [ln for ln in doc.splitlines() if ln.strip()]
    assert 3 <= len(lines) <= 6, f"calibflow/{stage}: {len(lines)} docstring lines"
    modules = {p.stem for p in (LIBRARY / stage).glob("*.py")} - {"__init__"}
    named = [m for m in modules if f"``{m}``" in doc]
    assert "first" in doc and named, f"calibflow/{stage}: the docstring names no module to open first"
    assert set(named) == modules, f"calibflow/{stage}: modules not described: {sorted(modules - set(named))}"


PRE_MOVE_NAMES = {"binopt", "binmake", "binplot", "binfit", "histos", "fitplots", "outputs", "toy_common",
                  "toys_lhcb", "toys_nanoaod", "toys_belle2", "toys_classifier"}
"""Module names of the flat layout before issue 14, each of which said its stage by a prefix."""


def test_module_names_carry_no_package_prefix() -> None:
    """``binning/optimise.py``, not ``binning/binopt.py`` or ``toys/toys_lhcb.py``."""
    for module in module_files():
        parts = module.split(".")
        name = parts[-1]
        assert name not in PRE_MOVE_NAMES, f"{module}: a name of the flat layout"
        if len(parts) == 3:
            package = parts[1]
            assert not name.startswith((f"{package}_", f"{package.rstrip('s')}_")), f"{module} repeats its package"


def test_named_entry_points_resolve() -> None:
    """Modules named in strings (toy generators, pool preloads, the console script) exist."""
    from calibflow.toys.registry import GENERATORS
    from tasks.fit import FitBin
    from tasks.prep import PrepareTuple

    entries = [*GENERATORS.values(), *FitBin.pool_preload, *PrepareTuple.pool_preload, "tasks.cli:main"]
    for entry in entries:
        module, _, func = entry.partition(":")
        imported = importlib.import_module(module)
        assert not func or callable(getattr(imported, func)), entry
