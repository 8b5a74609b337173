"""The package's shape, checked from its source: layers import only downward, the module import
graph has no cycle (function-level imports included, so none can hide one), no subpackage
imports a name from the package's root facade, one module talks to the C extension, and no
class or function outgrows what one reader can hold.  The tests keep their own shape: no test
module imports another (shared fixtures live in tests/conftest.py, shared helpers in modules named
by what they hold).

The layers, bottom first (``LAYERS``), are the design notes' diagram: a module may import its
own layer's modules and any lower layer's, never a higher one's.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "taskstats_fast")
TESTS = os.path.join(ROOT, "tests")

#: Bottom first.  A module's layer is the first entry that is its name or a package prefix of it.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("taskstats_fast._version", "taskstats_fast.errors", "taskstats_fast.layout"),
    ("taskstats_fast._native",),
    ("taskstats_fast.schema", "taskstats_fast.sink"),
    ("taskstats_fast.kernel",),
    ("taskstats_fast.accounting",),
    ("taskstats_fast.recording", "taskstats_fast.report"),
    ("taskstats_fast.live",),
    ("taskstats_fast.cli",),
    ("taskstats_fast", "taskstats_fast.__main__"),
)
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 80
#: Known oversize definitions still to be split: each must still be oversize (so the entry goes
#: when the split lands), and nothing else may be.
OVERSIZE_ALLOWED: Set[Tuple[str, str]] = set()


def _modules() -> Dict[str, str]:
    out = {}
    for directory, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


MODULES = _modules()


def _package_of(module: str) -> str:
    return module if MODULES[module].endswith("__init__.py") else module.rpartition(".")[0]


def _imports(module: str) -> List[Tuple[str, int, bool]]:
    """(imported module, line, at module level?) for every import of a package module."""
    tree = ast.parse(open(MODULES[module]).read())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names = [f"{source}.{a.name}" for a in node.names]
            targets = [n for n in names if n in MODULES] or [source]
        for target in targets:
            if "_tsf_cffi" in target:   # the built extension: _native's own half
                continue
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("taskstats_fast") and target != module:
                found.append((target, node.lineno, id(node) in top_level))
    return found


def _layer(module: str) -> int:
    best, depth = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > depth:
                best, depth = index, len(name)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_layers_import_only_downward():
    bad = [f"{m}:{line} imports {t} (layer {_layer(t)} above {_layer(m)})"
           for m in MODULES for t, line, _ in _imports(m) if _layer(t) > _layer(m)]
    assert not bad, "\n".join(bad)


def test_no_subpackage_imports_the_root_facade():
    """``from .. import Connection`` reaches through ``taskstats_fast/__init__``: a subpackage
    names the module that owns what it imports (``from ..kernel.connection import ...``)."""
    bad = []
    for module, path in MODULES.items():
        if _layer(module) == len(LAYERS) - 1:
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and (
                    (node.level and node.module is None and _package_of(module).count(".") + 1 == node.level)
                    or (not node.level and node.module == "taskstats_fast")):
                facade = [a.name for a in node.names if f"taskstats_fast.{a.name}" not in MODULES]
                if facade:
                    bad.append(f"{module}:{node.lineno} imports {', '.join(facade)} from the root")
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycle():
    """Function-level imports count: one used to postpone a cycle is still the cycle."""
    graph: Dict[str, Set[str]] = {m: {t for t, _, _ in _imports(m)} for m in MODULES}
    # a package's __init__ importing its own modules is how packages work, not a cycle
    for module in list(graph):
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_one_module_talks_to_the_c_extension():
    users = []
    for module, path in MODULES.items():
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "_tsf_cffi" in node.module:
                users.append(module)
    assert sorted(set(users)) == ["taskstats_fast._native"]


def test_no_class_or_function_outgrows_a_reader():
    oversize = set()
    for path in MODULES.values():
        rel = os.path.relpath(path, ROOT)
        for node in ast.walk(ast.parse(open(path).read())):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else \
                MAX_FUNCTION_LINES if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit is not None and node.end_lineno - node.lineno + 1 > limit:
                oversize.add((rel, node.name))
    assert oversize - OVERSIZE_ALLOWED == set(), "over the size limit"
    assert OVERSIZE_ALLOWED - oversize == set(), "split: remove it from OVERSIZE_ALLOWED"


#: An import of a module pytest collects (``test_*.py``, ``bench_*.py``), anywhere in a file: in
#: code, in a function, or in the source of a child process a test runs from a string.
TEST_MODULE_IMPORT = re.compile(
    r"^\s*(?:from\s+(?:tests\.|bench\.)?((?:test|bench)_\w+)\s+import\b"
    r"|import\s+(?:tests\.|bench\.)?((?:test|bench)_\w+)\b)"
    r"|import_module\(\s*[\"'](?:tests\.|bench\.)?((?:test|bench)_\w+)", re.MULTILINE)


def test_no_test_module_imports_another():
    """A test module importing another runs that module's import-time work and ties the two
    together (moving a test breaks the other); what several share lives in conftest.py or a
    helpers module."""
    bad = []
    for directory, _, names in os.walk(TESTS):
        for name in sorted(names):
            path = os.path.join(directory, name)
            if not name.endswith(".py") or path == os.path.abspath(__file__):  # this file: the examples below
                continue
            text = open(path, encoding="utf-8").read()
            for match in TEST_MODULE_IMPORT.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                target = next(g for g in match.groups() if g)
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports the test module {target}")
    assert not bad, "\n".join(bad)


def test_the_test_module_import_check_sees_every_form():
    """The check above finds an import at the top, in a function and in a child's source."""
    for text in ("from test_exporter import parse\n", "    from test_top import burst\n",
                 "import test_codec\n", 'script = """\nfrom tests.test_journal import x\n"""\n',
                 'm = importlib.import_module("test_codec")\n'):
        assert TEST_MODULE_IMPORT.search(text), text
    for text in ("from testing import x\n", "import wire\n", "from sample_records import batch\n",
                 "# the test_top module\n"):
        assert not TEST_MODULE_IMPORT.search(text), text
