"""The layering of docs/ARCHITECTURE.md, read off the source's import statements (every one,
also those inside functions: a lazy import is still a dependency).

- the core (cyclemask/*.py) imports no stage;
- engine (the runtime) imports neither export, train nor metrics;
- export imports the core and the engine only; train the core only;
- metrics (evaluation: it runs models and sweeps training) imports the core, engine and train;
- study (the human study's web application) imports the core only;
- no two modules import each other, directly or round a longer loop.

One exception, the package facade: `cyclemask/__init__.py` may import the Python API
(`cyclemask.engine.api`) inside a function (its PEP 562 `__getattr__`) or for type checkers only.
That import runs after `cyclemask` has finished loading, so it neither makes `import cyclemask`
load a stage nor closes a cycle at import time; `test_the_package_loads_the_api_lazily` holds
it to that.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"cyclemask": REPO / "cyclemask", "cyclemask.train": REPO / "train", "cyclemask.export": REPO / "export",
         "cyclemask.engine": REPO / "engine", "cyclemask.metrics": REPO / "metrics", "cyclemask.study": REPO / "study"}
STAGES = ("cyclemask.engine", "cyclemask.export", "cyclemask.train", "cyclemask.metrics", "cyclemask.study")
#: stage -> the stages it may import (the core is always allowed).
#: Where else the project imports its own modules from (its own benchmarks, too): checked for
#: imports of modules that do not exist, not for layering.
OTHER_SOURCES = ("benchmarks", "scripts", "tests")
ALLOWED = {
    "core": set(),
    "cyclemask.engine": set(),
    "cyclemask.export": {"cyclemask.engine"},
    "cyclemask.train": set(),
    "cyclemask.metrics": {"cyclemask.engine", "cyclemask.train"},
    "cyclemask.study": set(),
}


def _modules(roots: dict[str, Path] = ROOTS) -> dict[str, Path]:
    out = {}
    for prefix, root in roots.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [] if rel.name == "__init__" and len(rel.parts) == 1 else list(rel.parts)
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix, *parts]) if parts else prefix
            if prefix == "cyclemask" and parts and parts[0] in ("train", "export", "engine", "metrics", "study"):
                continue  # not there: the stages live at the top level
            out[name] = path
    return out


def _stage(module: str) -> str:
    for s in STAGES:
        if module == s or module.startswith(s + "."):
            return s
    return "core"


def _project(name: str, tops: tuple[str, ...] = ("cyclemask",)) -> bool:
    return any(name == t or name.startswith(t + ".") for t in tops)


def _import_targets(module: str, path: Path, tops: tuple[str, ...] = ("cyclemask",)):
    """(line, module, name) for every import of a module under `tops` in `path`: `name` is what
    `from module import name` takes from it (None for `import module`)."""
    tree = _parse(path)
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _project(a.name, tops):
                    yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if _project(target, tops):
                for a in node.names:
                    yield node.lineno, target, a.name


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@functools.lru_cache(maxsize=None)
def _top_names(path: Path) -> frozenset[str] | None:
    """The names a module defines at its top level (also under a top-level if/try), or None when
    it may hold any name (a module `__getattr__`, a star import)."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name == "__getattr__":
                    raise LookupError
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.name == "*":
                        raise LookupError
                    names.add(a.asname or a.name.partition(".")[0])
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    try:
        visit(_parse(path).body)
    except LookupError:
        return None
    return frozenset(names)


def _resolve(target: str, name: str | None, mods: dict[str, Path]) -> tuple[str | None, str | None]:
    """(the known module an import depends on, or None; what is missing, or None).

    A module that does not exist is missing, never its parent package: `from .gone import x`
    inside a package must not pass for an import of the package."""
    if name is None:
        return (target, None) if target in mods else (None, f"no module {target}")
    if f"{target}.{name}" in mods:  # `from package import submodule`
        return f"{target}.{name}", None
    if target not in mods:
        return None, f"no module {target}"
    names = _top_names(mods[target])
    if names is not None and name not in names:
        return target, f"{target} defines no {name}"
    return target, None


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The cyclemask modules `module` imports."""
    found = {dep for _, target, name in _import_targets(module, path)
             for dep in [_resolve(target, name, mods)[0]] if dep is not None}
    found.discard(module)
    return found


FACADE = ("cyclemask", "cyclemask.engine.api")


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
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
    for m in ("cyclemask.artifacts", "cyclemask.image_arrays", "cyclemask.engine.backends.select",
              "cyclemask.engine.backends.base", "cyclemask.export.pipeline", "cyclemask.train.trainer",
              "cyclemask.metrics.sweep", "cyclemask.study.app"):
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


def test_every_import_of_our_own_modules_names_one_that_exists():
    # A module moved or deleted leaves imports of its old path behind; one inside a function,
    # under an `except` that swallows the ImportError, fails silently (an engine under --ray
    # lost its direction that way). Every import of ours, also in tests and benchmarks, must
    # name a module that exists and, for `from m import x`, an x that m defines.
    mods = _modules({**ROOTS, "benchmarks": REPO / "benchmarks"})
    files = [(m, p) for m, p in _modules().items()]
    files += [(".".join(p.relative_to(REPO).with_suffix("").parts), p)
              for d in OTHER_SOURCES for p in sorted((REPO / d).rglob("*.py"))]
    missing = []
    for module, path in files:
        for line, target, name in _import_targets(module, path, ("cyclemask", "benchmarks")):
            why = _resolve(target, name, mods)[1]
            if why is not None:
                missing.append(f"{path.relative_to(REPO)}:{line}: {why}")
    assert not missing, "imports of modules or names that do not exist:\n  " + "\n  ".join(missing)


IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}
#: Handlers that an ImportError raised in their `try` ends in.
SWALLOWING = IMPORT_ERRORS | {"Exception", "BaseException"}


def _caught(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"BaseException"}
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {t.id if isinstance(t, ast.Name) else getattr(t, "attr", "?") for t in types}


def _own_imports(body: list[ast.stmt], tops: tuple[str, ...]) -> list[int]:
    """Lines of the imports of our own modules that run in `body` (not those of a function or
    class it defines: they run later, outside the `try`)."""
    lines = []
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import) and any(_project(a.name, tops) for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.level or _project(node.module or "", tops)):
            lines.append(node.lineno)
        stack.extend(ast.iter_child_nodes(node))
    return sorted(lines)


def _reads_the_name(handler: ast.ExceptHandler) -> bool:
    """The handler asks which module is missing: `exc.name`, or own_module_missing(exc)."""
    if handler.name is None:
        return False
    for n in ast.walk(handler):
        if (isinstance(n, ast.Attribute) and n.attr == "name" and isinstance(n.value, ast.Name)
                and n.value.id == handler.name):
            return True
        if (isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "own_module_missing"
                and any(isinstance(a, ast.Name) and a.id == handler.name for a in n.args)):
            return True
    return False


def test_no_except_can_hide_a_missing_module_of_ours():
    # Only third-party packages are optional. An import of ours inside a `try` whose handler
    # takes an ImportError turns a stale path into a silent fallback; a handler for an optional
    # package must re-raise when the missing module is ours (cyclemask.errors.own_module_missing).
    tops = ("cyclemask", "benchmarks")
    paths = list(_modules().values()) + [p for d in OTHER_SOURCES for p in sorted((REPO / d).rglob("*.py"))]
    bad = []
    for path in paths:
        where = path.relative_to(REPO)
        for node in ast.walk(_parse(path)):
            if not isinstance(node, ast.Try) and type(node).__name__ != "TryStar":
                continue
            swallowing = [h for h in node.handlers if _caught(h) & SWALLOWING]
            if swallowing:
                for line in _own_imports(node.body, tops):
                    bad.append(f"{where}:{line}: an import of ours inside a try that catches "
                               f"{', '.join(sorted(_caught(swallowing[0])))} (line {swallowing[0].lineno}); "
                               "import it before the try")
            for h in node.handlers:
                if _caught(h) & IMPORT_ERRORS and not _reads_the_name(h):
                    bad.append(f"{where}:{h.lineno}: `except {', '.join(sorted(_caught(h)))}` does not ask which "
                               "module is missing: `as exc` and `if own_module_missing(exc): raise`")
    assert not bad, "an ImportError of our own could be hidden:\n  " + "\n  ".join(bad)
