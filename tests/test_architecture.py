"""The package's architecture, checked: the import contracts of
pyproject.toml's [tool.importlinter] (the layers, top to bottom, and core
as the NumPy-only reference), and no import cycles between modules."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)


def test_the_import_contracts_hold():
    run = _lint_imports()
    if run.returncode != 0:
        broken = run.stdout[run.stdout.find("Broken contracts"):] if "Broken contracts" in run.stdout else run.stdout
        pytest.fail("import contracts broken:\n" + broken + run.stderr, pytrace=False)
    assert "0 broken" in run.stdout


def cycles(graph) -> list:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for m in sorted(graph.modules):
            if m not in index:
                visit(m)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_cycles_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c"}
        edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]
    assert cycles(Graph()) == [["a", "b"]]


def test_no_module_import_cycles():
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT / "src"))
    try:
        found = cycles(grimp.build_graph("elman"))
    finally:
        sys.path.remove(str(ROOT / "src"))
    assert not found, f"import cycles: {found}"


def test_the_model_imports_without_numba():
    """Numba takes about 0.3 s to import: the model's modules import it only
    where a compiled loop is first used (a program that only loads a model
    and reads its probabilities does not pay it)."""
    import subprocess
    import sys
    code = "import sys, elman.model; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
