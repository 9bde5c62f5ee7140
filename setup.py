"""Build vmalab, compiling its core with mypyc where that works (pure Python otherwise).

The metadata is in ``pyproject.toml``; this file only adds the mypyc extension modules.

* Compiled: the modules of ``MYPYC_GROUPS`` (``vmalab/mm``, ``vmalab/designs``,
  ``kernel.py``, ``process.py``, ``task.py``, ``proc.py``, ``budget.py``, the replay in
  ``vmalab/trace``, ``program/run.py``), one shared library per group, minus ``MYPYC_EXCLUDE`` (see
  docs/performance.md). ``VMALAB_MYPYC_MODULES`` (comma-separated paths under ``src/``)
  overrides the list (one group).
* Pure Python when ``VMALAB_PURE=1``, when mypyc is not importable (no compiler: the build
  backend ``_build_backend/vmalab_build.py`` then does not install mypy), for an editable
  install, or when mypyc or the C compiler fails: the build says why on stderr and installs
  the same package without extension modules. The ``.py`` files are always installed, so a
  compiled module whose ``.so`` is missing falls back to its source.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")

#: The compiled modules (paths relative to src/; a directory means its every module but
#: ``__init__.py``), in groups: each group is one shared library (mypyc's ``separate``),
#: built in parallel and each much quicker to compile than one big C file; calls within a
#: group are direct C calls, calls between groups go through an exported table. The hot
#: path (mm/ and what calls it on every syscall) stays in two groups.
MYPYC_GROUPS: dict[str, tuple[str, ...]] = {
    #: budget.py is here because its LimitFailure subclasses mm/slab.py's AllocFailure: an
    #: interpreted subclass of a compiled class fails compiled code's type checks.
    "vmalab_mm": ("vmalab/mm", "vmalab/budget.py"),
    "vmalab_core": (
        "vmalab/designs",
        "vmalab/kernel.py",
        "vmalab/process.py",
        "vmalab/task.py",
        "vmalab/proc.py",
    ),
    "vmalab_trace": (
        "vmalab/trace/parse.py",
        "vmalab/trace/args.py",
        "vmalab/trace/replay.py",
        "vmalab/trace/replay_state.py",
        "vmalab/trace/events.py",
        "vmalab/trace/handlers_mm.py",
        "vmalab/trace/handlers_fs.py",
        "vmalab/trace/handlers_task.py",
    ),
    "vmalab_program": ("vmalab/program/run.py",),
}
#: Modules left interpreted, with the reason (docs/performance.md, "mypyc").
MYPYC_EXCLUDE: dict[str, str] = {
    "vmalab/trace/replay.py": "tests/test_record_replay.py wraps Replayer.__init__: a "
    "compiled class's constructor is not replaced (KeyError in the test)",
}


#: setup.py commands that build extension modules (pip's metadata steps run egg_info and
#: dist_info first: mypyc's minute of type checking and C generation is skipped there).
BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext", "install", "develop", "editable_wheel"}


def _note(msg: str) -> None:
    print(f"vmalab setup.py: {msg}", file=sys.stderr)


def _expand(path: str) -> list[str]:
    if path.endswith(".py"):
        return [path] if os.path.exists(os.path.join(SRC, path)) else []
    found = glob.glob(os.path.join(SRC, path, "*.py"))
    return sorted(os.path.relpath(p, SRC) for p in found if not p.endswith("__init__.py"))


def mypyc_groups() -> dict[str, list[str]]:
    """The groups of source paths (relative to src/) to compile."""
    env = os.environ.get("VMALAB_MYPYC_MODULES", "").strip()
    if env:
        return {"vmalab_custom": [m.strip() for m in env.split(",") if m.strip()]}
    return {
        name: [m for p in paths for m in _expand(p) if m not in MYPYC_EXCLUDE]
        for name, paths in MYPYC_GROUPS.items()
    }


def remove_stale_outputs() -> None:
    """Delete compiled modules left in build/ by an earlier build.

    pip builds in the source tree and setuptools reuses ``build/lib*``: without this a pure
    build after a compiled one (or a build with another module list) would package the
    old ``.so`` files, and a stale shared library next to a new one breaks imports
    (``TypeError: vmalab.mm.slab.Slabs object expected; got vmalab.mm.slab.Slabs``).
    """
    for lib in glob.glob(os.path.join(HERE, "build", "lib*")):
        stale = glob.glob(os.path.join(lib, "*__mypyc*"))
        stale += glob.glob(os.path.join(lib, "vmalab", "**", "*.so"), recursive=True)
        stale += glob.glob(os.path.join(lib, "vmalab", "**", "*.pyd"), recursive=True)
        for path in stale:
            os.remove(path)


def ext_modules() -> list[Any]:
    """mypyc's extension modules, or [] for a pure-Python build (the reason is printed)."""
    if os.environ.get("VMALAB_PURE", "") not in ("", "0"):
        _note("VMALAB_PURE is set: pure-Python build")
        return []
    if not BUILD_COMMANDS & set(sys.argv[1:]):
        return []  # egg_info / dist_info (requirements, metadata): nothing to compile
    try:
        from mypyc.build import mypycify
    except ImportError:
        _note("mypyc is not importable (no C compiler, or mypy absent): pure-Python build")
        return []
    groups = mypyc_groups()
    mods = [m for g in groups.values() for m in g]
    cwd = os.getcwd()
    try:
        os.chdir(SRC)  # module names are derived from paths relative to src/
        exts = mypycify(
            # the build environment lacks the runtime dependencies (pyelftools...): a
            # "type: ignore" needed against their types is unused there
            ["--ignore-missing-imports", "--no-warn-unused-ignores", *mods],
            opt_level=os.environ.get("VMALAB_MYPYC_OPT", "3"),
            target_dir=os.path.join(HERE, "build", "mypyc"),
            separate=[(g, name) for name, g in groups.items()],
        )
    except BaseException as exc:  # mypy type errors raise SystemExit
        _note(f"mypyc failed ({type(exc).__name__}: {exc}): pure-Python build")
        return []
    finally:
        os.chdir(cwd)
    for e in exts:  # sources were given relative to src/
        e.sources = [s if os.path.isabs(s) else os.path.join(SRC, s) for s in e.sources]
    _note(f"compiling {len(mods)} modules with mypyc: {', '.join(mods)}")
    return exts


class OptionalBuildExt(build_ext):  # type: ignore[misc]
    """build_ext that falls back to pure Python if any compiled module fails to build.

    mypyc's modules share one library: a partial build would leave shims that cannot
    import, so on any failure every extension output is removed and none is installed.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:  # the groups compile in parallel (``build_ext -j``)
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        if getattr(self, "editable_mode", False):
            _note("editable install: pure Python (no extension modules)")
            self.extensions: list[Any] = []
            return
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, DistutilsExecError, OSError
            _note(f"C build failed ({type(exc).__name__}: {exc}): pure-Python build")
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []

    def get_outputs(self) -> list[str]:
        return [p for p in super().get_outputs() if os.path.exists(p)]


remove_stale_outputs()
setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
