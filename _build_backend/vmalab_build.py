"""vmalab's PEP 517 build backend: setuptools, plus mypy (for mypyc) when it can be used.

``pip install .`` builds a wheel whose core modules are compiled by mypyc (see
``setup.py``): this backend asks for ``mypy`` as an extra build requirement when a C
compiler is on the PATH and ``VMALAB_PURE`` is not set. Without a compiler, with
``VMALAB_PURE=1``, or for an editable install (``pip install -e .``, always pure Python so
that edits to ``src/`` take effect), it asks for nothing more than setuptools and
``setup.py`` builds the pure-Python package.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from typing import Any

from setuptools import build_meta as _orig
from setuptools.build_meta import *  # noqa: F403 - the rest of the PEP 517 interface

MYPY = "mypy>=1.10"


def _pure_requested() -> bool:
    return os.environ.get("VMALAB_PURE", "") not in ("", "0")


def compiler_available() -> bool:
    """True if the C compiler Python was built with (or cc/gcc) is on the PATH."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    names = [cc[0]] if cc else []
    return any(shutil.which(n) for n in [*names, "cc", "gcc"])


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    """setuptools' requirements, and mypy when the wheel will be compiled."""
    req = list(_orig.get_requires_for_build_wheel(config_settings))
    if not _pure_requested() and compiler_available():
        req.append(MYPY)
    return req


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    """An editable install is pure Python: no mypy needed."""
    return list(_orig.get_requires_for_build_editable(config_settings))


def build_editable(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    """Build the editable wheel with mypyc off (compiled modules would shadow src/)."""
    os.environ["VMALAB_PURE"] = "1"
    return str(_orig.build_editable(wheel_directory, config_settings, metadata_directory))
