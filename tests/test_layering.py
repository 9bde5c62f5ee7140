"""The import layering of DEVELOPERS.md: mm/ imports nothing above it, no module of
vmalab's core takes part in an import circle, report/ and trace/ import nothing above their
floors, and no room of the house (a top-level module or a subpackage) takes part in an
import circle, the package face ``vmalab/__init__.py`` included (imports under
TYPE_CHECKING and inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "vmalab"
#: What mm/ may import of vmalab besides mm/ itself.
MM_MAY_IMPORT = {"vmalab.errors", "vmalab.uapi"}
#: The core: mm/, the designs, and the modules between them and the public API.
CORE = [
    "mm",
    "designs",
    "kernel.py",
    "process.py",
    "task.py",
    "proc.py",
    "budget.py",
    "errors.py",
    "uapi.py",
]


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every vmalab module ``path`` imports, anywhere in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("vmalab"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    base = SRC.parent / sub.replace(".", "/")
                    is_module = base.with_suffix(".py").exists() or (base / "__init__.py").exists()
                    out.add(sub if is_module else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("vmalab"))
    return out


def _core_files() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        p = SRC / name
        files.extend(sorted(p.glob("*.py")) if p.is_dir() else [p])
    return files


def test_mm_imports_nothing_above_it() -> None:
    bad = {
        f"{_module(f)} imports {m}"
        for f in sorted((SRC / "mm").glob("*.py"))
        for m in _imports(f)
        if not m.startswith("vmalab.mm") and m not in MM_MAY_IMPORT
    }
    assert not bad, sorted(bad)


def test_core_has_no_import_circle() -> None:
    graph = {_module(f): _imports(f) - {_module(f)} for f in _core_files()}
    _assert_acyclic(graph)


#: The floors above the core, lowest first: what each may import of vmalab besides itself.
LEAVES = {"vmalab.errors", "vmalab.uapi"}
CORE_MODULES = {"vmalab.mm", "vmalab.designs", "vmalab.kernel", "vmalab.process", "vmalab.proc"}
CORE_MODULES |= {"vmalab.budget", "vmalab.task"}
MAY_IMPORT = {
    # report/ measures and renders what it is handed: it runs nothing and reads no trace
    "vmalab.report": LEAVES,
    "vmalab.cliutil": LEAVES,
    # trace/ runs the model on traces and workloads: the core, report/ and the CLI helpers,
    # never the package face (``from vmalab import X``) nor what stands above it
    "vmalab.trace": LEAVES | CORE_MODULES | {"vmalab.report", "vmalab.cliutil"},
}


def _room(module: str) -> str:
    """The room a module belongs to: ``vmalab.mm.vma`` -> ``vmalab.mm``; a top-level module
    is its own room; the package face is ``vmalab``."""
    parts = module.split(".")
    if len(parts) >= 2 and (SRC / parts[1]).is_dir():
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def _all_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_upper_floors_import_nothing_above_them() -> None:
    bad = set()
    for f in _all_files():
        m = _module(f)
        for room, allowed in MAY_IMPORT.items():
            if not _within(m, room):
                continue
            for dep in _imports(f):
                if not _within(dep, room) and not any(_within(dep, a) for a in allowed):
                    bad.add(f"{m} imports {dep}")
    assert not bad, sorted(bad)


def test_nothing_below_the_package_face_imports_it() -> None:
    """``vmalab/__init__.py`` imports the core and ``trace.replay``; none of them (nor
    anything they import) may import the package itself, or the face is in a circle."""
    bad = {
        f"{_module(f)} imports vmalab"
        for f in _all_files()
        if any(_within(_module(f), r) for r in [*MAY_IMPORT, *CORE_MODULES, *LEAVES])
        and "vmalab" in _imports(f)
    }
    assert not bad, sorted(bad)


def test_rooms_have_no_import_circle() -> None:
    graph: dict[str, set[str]] = {}
    for f in _all_files():
        r = _room(_module(f))
        graph.setdefault(r, set()).update(_room(d) for d in _imports(f))
    for r in graph:
        graph[r].discard(r)
    _assert_acyclic(graph)


def test_no_file_takes_part_in_an_import_circle() -> None:
    """Inside a room too (trace/, report/, program/, oracle/, mm/ ...): the file graph of the
    whole package is acyclic, TYPE_CHECKING imports included (a package's ``__init__`` is
    the module ``vmalab.x``)."""
    graph = {_module(f): _imports(f) - {_module(f)} for f in _all_files()}
    _assert_acyclic(graph)


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
