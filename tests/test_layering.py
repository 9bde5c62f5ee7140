"""The import layering of DEVELOPERS.md: mm/ imports nothing above it, and no module of
vmalab's core takes part in an import circle (imports under TYPE_CHECKING count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "vmalab"
#: What mm/ may import of vmalab besides mm/ itself.
MM_MAY_IMPORT = {"vmalab.errors", "vmalab.uapi"}
#: The core: mm/, the designs, and the modules between them and the public API.
CORE = ["mm", "designs", "kernel.py", "process.py", "proc.py", "budget.py", "errors.py", "uapi.py"]


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
                    out.add(
                        sub
                        if (SRC.parent / (sub.replace(".", "/") + ".py")).exists()
                        else node.module
                    )
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
