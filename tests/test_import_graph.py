"""The package's import graph has no cycles (lazy imports inside functions included), and
no module is longer than 600 lines.

Imports under `if TYPE_CHECKING:` never run, so the whole package is checked without
them; the engine and the report are checked with them too (a cycle a type checker sees
is still a knot for whoever changes the code). And the engine names Keras in one module
only, `engine/process/_keras.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import keras_loadtune

PACKAGE = Path(keras_loadtune.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    tree: ast.AST, modules: set[str], here: str, is_pkg: bool, type_checking: bool
) -> set[str]:
    out: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if not type_checking and isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = here.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        out.add(sub)
                    elif base in modules:
                        out.add(base)
            stack.append(child)
    out.discard(here)
    return out


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    """`{module: modules of the package it imports}` for every module of the package.

    `type_checking`: count imports under `if TYPE_CHECKING:` too.
    """
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = _imports(tree, modules, name, path.name == "__init__.py", type_checking)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_but_not_type_checking_ones():
    graph = import_graph()
    # persistence imports storage at the top, report._model imports _text lazily.
    assert "keras_loadtune.storage" in graph["keras_loadtune.persistence"]
    assert "keras_loadtune.report._text" in graph["keras_loadtune.report._model"]
    # report._text names ReportData only for type checkers.
    assert "keras_loadtune.report._data" not in graph["keras_loadtune.report._text"]
    assert (
        "keras_loadtune.report._data"
        in import_graph(type_checking=True)["keras_loadtune.report._text"]
    )


def test_the_package_has_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("package", ["keras_loadtune.engine", "keras_loadtune.report"])
def test_no_cycle_through_the_package_even_counting_type_checking_imports(package):
    knots = [
        c
        for c in cycles(import_graph(type_checking=True))
        if any(m == package or m.startswith(package + ".") for m in c)
    ]
    assert knots == []


# -- Module size ---------------------------------------------------------------------------------
MAX_MODULE_LINES = 600


def oversized_modules(root: Path, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """Files under `root` (paths relative to it) longer than `limit` lines, with their lengths."""
    lengths = {
        p.relative_to(root).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in root.rglob("*.py")
    }
    return {name: n for name, n in sorted(lengths.items()) if n > limit}


def test_the_size_check_finds_a_long_module(tmp_path):
    (tmp_path / "short.py").write_text("x = 1\n" * 600)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * 601)
    assert oversized_modules(tmp_path) == {"sub/long.py": 601}


def test_every_module_is_at_most_600_lines():
    # One concept per module (house review): a module past this splits along a concept.
    assert oversized_modules(PACKAGE) == {}


# -- Keras in one place in the engine ------------------------------------------------------------
KERAS_SEAM = "keras_loadtune.engine.process._keras"


def keras_mentions(tree: ast.AST) -> list[str]:
    """What in this code (docstrings and other bare strings left out) names Keras: an
    import of `keras`, the string `"keras"` or `"keras.<...>"`, `KERAS_BACKEND`, or
    `PyDataset`."""
    found = []
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "keras"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "keras":
            found.append(node.module or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if id(node) in docstrings:
                continue
            if text == "keras" or text.startswith("keras.") or "KERAS_BACKEND" in text:
                found.append(repr(text))
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name == "PyDataset":
                found.append(name)
    return found


def test_keras_mentions_finds_imports_strings_and_names_but_not_docstrings():
    code = '''"""Uses keras.utils.PyDataset."""
import keras
from keras.utils import PyDataset
x = "keras"
y = os.environ["KERAS_BACKEND"]
z = sys.modules.get("keras.src.trainers")
w = "keras_loadtune"
class D(kd.PyDataset): pass
'''
    expected = ["keras", "keras.utils", "PyDataset", "'keras'", "'KERAS_BACKEND'"]
    expected.append("'keras.src.trainers'")
    assert sorted(keras_mentions(ast.parse(code))) == sorted(expected)
    assert keras_mentions(ast.parse('"""keras, KERAS_BACKEND, PyDataset"""')) == []


def test_the_engine_names_keras_only_in_its_keras_module():
    engine = PACKAGE / "engine"
    named = {}
    for path in engine.rglob("*.py"):
        name = _module_name(path)
        found = keras_mentions(ast.parse(path.read_text(encoding="utf-8")))
        if found and name != KERAS_SEAM:
            named[name] = found
    assert named == {}
    assert keras_mentions(ast.parse((engine / "process" / "_keras.py").read_text("utf-8")))
