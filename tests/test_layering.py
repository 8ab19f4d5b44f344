"""The layering of docs/ARCHITECTURE.md, read off the source's import statements (every one,
also those inside functions: a lazy import is still a dependency).

- the core (cyclemask/*.py) imports no stage;
- engine (the runtime) imports neither export, train nor metrics;
- export imports the core and the engine only; train the core only;
- metrics (evaluation: it runs models and sweeps training) imports the core, engine and train;
- no two modules import each other, directly or round a longer loop.

One exception, the package facade: `cyclemask/__init__.py` may import the Python API
(`cyclemask.engine.api`) inside a function (its PEP 562 `__getattr__`) or for type checkers only.
That import runs after `cyclemask` has finished loading, so it neither makes `import cyclemask`
load a stage nor closes a cycle at import time; `test_the_package_loads_the_api_lazily` holds
it to that.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"cyclemask": REPO / "cyclemask", "cyclemask.train": REPO / "train", "cyclemask.export": REPO / "export",
         "cyclemask.engine": REPO / "engine"}
STAGES = ("cyclemask.engine", "cyclemask.export", "cyclemask.train", "cyclemask.metrics")
#: stage -> the stages it may import (the core is always allowed).
ALLOWED = {
    "core": set(),
    "cyclemask.engine": set(),
    "cyclemask.export": {"cyclemask.engine"},
    "cyclemask.train": set(),
    "cyclemask.metrics": {"cyclemask.engine", "cyclemask.train"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for prefix, root in ROOTS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [] if rel.name == "__init__" and len(rel.parts) == 1 else list(rel.parts)
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix, *parts]) if parts else prefix
            if prefix == "cyclemask" and parts and parts[0] in ("train", "export", "engine"):
                continue  # not there: the stages live at the top level
            out[name] = path
    return out


def _stage(module: str) -> str:
    for s in STAGES:
        if module == s or module.startswith(s + "."):
            return s
    return "core"


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The cyclemask modules `module` imports (resolved to the deepest known module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = set()

    def add(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cyclemask"):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("cyclemask"):
                continue
            for a in node.names:  # `from . import x` imports the submodule x when there is one
                sub = f"{target}.{a.name}"
                add(sub if sub in known else target)
    found.discard(module)
    return found


FACADE = ("cyclemask", "cyclemask.engine.api")


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    graph[FACADE[0]].discard(FACADE[1])  # lazy only: see test_the_package_loads_the_api_lazily
    return graph


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def test_the_package_loads_the_api_lazily():
    """The package's own module imports a stage only as the facade allows: the API module, and
    inside a function or an `if TYPE_CHECKING:` block, never when `import cyclemask` runs."""
    tree = ast.parse((REPO / "cyclemask" / "__init__.py").read_text())
    stages, eager = [], []

    def walk(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) or _is_type_checking(child)
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                else:  # relative to the package itself: level 1 is cyclemask
                    names = [".".join(filter(None, ["cyclemask" if child.level else "", child.module or ""]))]
                for name in names:
                    if _stage(name) != "core":
                        stages.append(name)
                        if not inner:
                            eager.append(name)
            walk(child, inner)

    walk(tree, False)
    assert stages == [FACADE[1]] * len(stages), f"the package imports stages other than the API: {stages}"
    assert not eager, f"the package imports {eager} when it loads; only lazily (inside __getattr__)"


def test_the_source_tree_is_what_the_test_reads():
    graph = _graph()
    for m in ("cyclemask.artifacts", "cyclemask.images", "cyclemask.engine.backends.select",
              "cyclemask.engine.backends.base", "cyclemask.export.pipeline", "cyclemask.train.trainer",
              "cyclemask.metrics.sweep"):
        assert m in graph, m
    assert "cyclemask.engine.backends.base" in graph["cyclemask.engine.backends.select"]


def test_stages_import_only_what_their_layer_allows():
    bad = []
    for m, deps in sorted(_graph().items()):
        own = _stage(m)
        for d in sorted(deps):
            other = _stage(d)
            if other != "core" and other != own and other not in ALLOWED[own]:
                bad.append(f"{m} ({own}) imports {d} ({other})")
    assert not bad, "layering broken:\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    graph = _graph()
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)
