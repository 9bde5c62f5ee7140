"""Fuzz targets for every input vmalab reads, shared by the CI test, the offline runner and
the atheris driver.

A target takes bytes and either returns (the input was accepted, or refused with the
reader's own located error) or raises ``Unclean``: an exception the reader should have
turned into a one-line error, i.e. what the command line would print as a traceback.

* ``program``: the program format (``vmalab.program.loads``); what parses is also run on
  the model under a small ``Budget`` (a model crash is unclean, a ResourceLimitError clean);
* ``strace``: an strace log through ``vmalab.trace.replay.replay`` (lenient and strict);
* ``maps``: a maps/smaps dump through ``parse_maps`` and ``apply_maps_dump`` onto a model
  process (files are model memfds of the size asked for: no host file is opened);
* ``cli``: a command line through the parsers of every command (not run);
* ``recording``: a recording directory (trace.strace, manifest.json, snapshots/*.maps;
  /work/notes/recording-spec.md) through ``replay(DIR)``, where the branch supports
  recordings (``RECORDINGS``).

Clean outcomes: ``UserInputError``, ``ValueError`` (TraceSyntaxError names its line),
``ResourceLimitError``; for replay also ``FileNotFoundError`` naming the trace.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmalab import program as P
from vmalab.budget import Budget
from vmalab.errors import ResourceLimitError, UserInputError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "traces"
RECORDINGS = importlib.util.find_spec("vmalab.trace.recording") is not None


class Unclean(Exception):
    """An input made a reader fail with something other than its located error."""

    def __init__(self, target: str, exc: BaseException) -> None:
        self.target = target
        self.exc = exc
        super().__init__(f"{target}: {type(exc).__name__}: {exc}"[:500])


def _budget() -> Budget:
    return Budget(pages=4096, stored_bytes=4 << 20, vmas=4096, pgtables=256, seconds=5.0)


CLEAN = (UserInputError, ValueError, ResourceLimitError)
CLEAN_REPLAY = (UserInputError, ValueError, ResourceLimitError, FileNotFoundError)
CLEAN_APPLY = (UserInputError, ValueError, ResourceLimitError, OSError)


def program(data: bytes) -> None:
    try:
        prog = P.loads(data, "fuzz.json")
    except CLEAN:
        return
    except Exception as e:
        raise Unclean("program", e) from e
    try:
        obs = P.run_model(prog, "sticky", check=prog.count_ops() <= 200, budget=_budget())
    except ResourceLimitError:
        return
    except Exception as e:
        raise Unclean("program(run)", e) from e
    if obs.error is not None and not obs.error.startswith("refused"):
        raise Unclean("program(run)", RuntimeError(obs.error))


class _Scratch:
    """One private temporary folder per process, removed at exit."""

    path: str | None = None

    @classmethod
    def get(cls) -> str:
        if cls.path is None or not os.path.isdir(cls.path):
            cls.path = tempfile.mkdtemp(prefix="vmalab-fuzz-")
            import atexit

            atexit.register(shutil.rmtree, cls.path, True)
        return cls.path


def strace(data: bytes) -> None:
    from vmalab.trace.replay import replay

    path = os.path.join(_Scratch.get(), "t.strace")
    with open(path, "wb") as f:
        f.write(data)
    for lenient in (False, True):
        try:
            replay(path, "sticky", lenient=lenient)
        except CLEAN_REPLAY:
            pass
        except Exception as e:
            raise Unclean(f"strace(lenient={lenient})", e) from e


def maps(data: bytes) -> None:
    from vmalab import Kernel
    from vmalab.trace.layout import apply_maps_dump, parse_maps

    text = data.decode("utf-8", "replace")
    try:
        vmas = parse_maps(text, "fuzz.maps")
    except CLEAN:
        return
    except Exception as e:
        raise Unclean("maps(parse)", e) from e
    k = Kernel("sticky", budget=_budget())
    proc = k.spawn()
    files: dict[str, list[int]] = {}

    def opener(path: str, size: int, mode: int) -> int:
        """The replay's model file cache: one file per path, grown (never shrunk) to the
        size asked for."""
        if path not in files:
            files[path] = [proc.memfd_create("f"), 0]
        fd, have = files[path]
        want = max(0, size)
        if want > have:
            proc.ftruncate(fd, want)
            files[path][1] = want
        return fd

    try:
        apply_maps_dump(proc, vmas, opener)
    except CLEAN_APPLY:
        # OSError: the dump asks for a mapping the kernel refuses (replay reports it)
        pass
    except Exception as e:
        raise Unclean("maps(apply)", e) from e
    try:
        k.check()
    except Exception as e:
        raise Unclean("maps(check)", e) from e


def recording(data: bytes) -> None:
    """``data`` is a JSON object {"trace": str, "manifest": any, "snapshots": {name: str}}
    (or raw bytes, used as the manifest); the directory is built from it and replayed."""
    if not RECORDINGS:
        return
    from vmalab.trace.replay import replay

    d = os.path.join(_Scratch.get(), "rec")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "snapshots"))
    try:
        parts: Any = json.loads(data)
    except (ValueError, RecursionError):
        parts = None
    if not isinstance(parts, dict):
        parts = {"trace": "", "manifest": data.decode("utf-8", "replace"), "snapshots": {}}
    with open(os.path.join(d, "trace.strace"), "w") as f:
        f.write(_text(parts.get("trace", "")))
    man = parts.get("manifest", {})
    with open(os.path.join(d, "manifest.json"), "w") as f:
        f.write(man if isinstance(man, str) else json.dumps(man))
    snaps = parts.get("snapshots", {})
    if isinstance(snaps, dict):
        for name, text in list(snaps.items())[:16]:
            base = os.path.basename(str(name)) or "x"
            with open(os.path.join(d, "snapshots", base), "w") as f:
                f.write(_text(text))
    try:
        replay(d, "sticky")
    except CLEAN_REPLAY:
        pass
    except Exception as e:
        raise Unclean("recording", e) from e


def _text(v: Any) -> str:
    """A file's text from the fuzzed container: a list of lines (so that JSON-aware edits
    drop, duplicate and replace lines) or anything else as str()."""
    if isinstance(v, list):
        return "".join(x if isinstance(x, str) else str(x) for x in v)
    return v if isinstance(v, str) else str(v)


def pack_recording(path: str) -> bytes:
    """A real recording directory as the ``recording`` target's JSON container."""
    p = Path(path)
    snaps = {
        q.name: q.read_text(errors="replace").splitlines(keepends=True)
        for q in sorted((p / "snapshots").glob("*"))[:16]
    }
    return json.dumps(
        {
            "trace": (p / "trace.strace").read_text(errors="replace").splitlines(keepends=True),
            "manifest": json.loads((p / "manifest.json").read_text()),
            "snapshots": snaps,
        }
    ).encode()


def cli(data: bytes) -> None:
    """A command line (whitespace-separated words) through the parser of every command.

    Parses only, never runs a command (``record`` would run a program, ``fuzz`` the live
    kernel): the group and the chosen command build their contexts, which checks every
    option's type and range. Clean: click's usage errors and its ``Exit`` (help, version)
    and a UserInputError; anything else would reach the user as a traceback.
    """
    import click

    from vmalab.cli import main

    words = data.decode("utf-8", "replace").replace("\0", "").split()[:16]
    try:
        with main.make_context("vmalab", list(words)) as ctx:
            # the group leaves the command and its arguments unparsed (click keeps the
            # first in ``protected_args``, deprecated for reading since click 8.2)
            left = [*getattr(ctx, "_protected_args", []), *ctx.args]
            name = left[0] if left else None
            rest = left[1:]
            cmd = main.get_command(ctx, name) if name else None
            if cmd is not None:
                with cmd.make_context(name, rest, parent=ctx):
                    pass
    except (click.ClickException, click.exceptions.Exit, click.Abort, UserInputError):
        return
    except Exception as e:
        raise Unclean("cli", e) from e


TARGETS: dict[str, Callable[[bytes], None]] = {
    "program": program,
    "strace": strace,
    "maps": maps,
    "recording": recording,
    "cli": cli,
}


# --------------------------------------------------------------------------------------
# Seeds and a mutator (the offline runner and the CI test; atheris brings its own)


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start mutating from."""
    if target == "program":
        from vmalab.oracle import random_program

        out = [random_program(s).dumps().encode() for s in range(20)]
        reg = ROOT / "tests" / "regressions"
        out += [p.read_bytes() for p in sorted(reg.glob("*.json"))[:20]]
        return out
    if target == "strace":
        out = []
        for p in sorted(FIXTURES.glob("*.trace")):
            lines = p.read_bytes().splitlines(keepends=True)
            for i in range(0, min(len(lines), 240), 40):
                out.append(b"".join(lines[i : i + 40]))
        return out
    if target == "maps":
        return [p.read_bytes() for p in sorted(FIXTURES.glob("*.maps"))[:10]]
    if target == "recording":
        man = (
            json.loads((FIXTURES / "manifest.json").read_text())
            if (FIXTURES / "manifest.json").exists()
            else {}
        )
        tr = sorted(FIXTURES.glob("*.trace"))
        mp = sorted(FIXTURES.glob("*.maps"))
        trace = b"".join(tr[0].read_bytes().splitlines(keepends=True)[:80]).decode() if tr else ""
        snap = mp[0].read_text() if mp else ""
        rec = {
            "trace": trace,
            "manifest": {
                "format": "vmalab-recording",
                "version": 1,
                "command": ["x"],
                "snapshots": [
                    {
                        "pid": 1,
                        "kind": "exec",
                        "seq": 1,
                        "line": 1,
                        "maps": "snapshots/1.1.exec.maps",
                    }
                ],
                "files": {},
                "fixture": man if isinstance(man, dict) else {},
            },
            "snapshots": {"1.1.exec.maps": snap},
        }
        out = [json.dumps(rec).encode()]
        # Real recordings (``vmalab record -o DIR -- CMD``) make far better seeds.
        for path in filter(None, os.environ.get("VMALAB_FUZZ_RECORDINGS", "").split(":")):
            out.append(pack_recording(path))
        return out
    if target == "cli":
        return [line.encode() for line in _CLI_SEEDS]
    raise KeyError(target)


_CLI_SEEDS = [
    "compare allocator",
    "compare thread_stacks:threads=64 --design tagged,sticky --format text",
    "compare app.strace --plot x.png --baseline sticky --guardify --stop-at-line 10",
    "replay app.strace --design sticky --maps 12 --start 1:2:f --verify --host-files",
    "sweep allocator jit --workers 4 --format json",
    "workloads --format text",
    "diff p.json --timeout 5 --design sticky",
    "fuzz --programs 10 --seed 1 --out d",
    "soak --ops 1000 --check-every 10 --processes 2",
    "record -o d --force -- /bin/true",
    "--budget pages=10 replay t",
    "demo --design sticky",
    "-h",
    "--version",
    "replay -h",
]


_INTERESTING = [
    b"0",
    b"-1",
    b"18446744073709551615",
    b"9223372036854775807",
    b"1e999",
    b"NaN",
    b"0x7fffffffffff",
    b"0xffffffffffffffff",
    b"null",
    b"[]",
    b"{}",
    b'"',
    b"\x00",
    b"(",
    b")",
    b"<unfinished ...>",
    b"<... mmap resumed>",
    b"/dev/zero",
    b"/proc/self/mem",
    b"../../",
    b"\n",
    b" ",
    b"65536",
    b"4294967296",
    b"-4096",
    b"[" * 64,
    b"\xff\xfe",
]


_VALUES: list[Any] = [
    0,
    1,
    -1,
    255,
    256,
    4096,
    65535,
    65536,
    1 << 31,
    1 << 32,
    1 << 63,
    1 << 64,
    -(1 << 63),
    1e308,
    float("nan"),
    True,
    None,
    "",
    "x" * 40,
    "../x",
    "a/b",
    "\x00",
    [],
    {},
    [1],
    "rw",
    "none",
    "shared",
    "private",
    "anonymous",
    "populate",
    "guard_install",
    "fork",
    "repeat",
    "exit",
]


def _mutate_json(v: Any, rnd: random.Random, depth: int = 0) -> Any:
    """Structure-aware edit of decoded JSON: replace, drop or duplicate one element."""
    if isinstance(v, dict) and v and depth < 8:
        k = rnd.choice(list(v))
        r = rnd.random()
        if r < 0.15:
            v = dict(v)
            del v[k]
            return v
        if r < 0.25:
            return {
                **v,
                rnd.choice(
                    [
                        "len",
                        "addr",
                        "count",
                        "stride",
                        "file",
                        "pages",
                        "offset",
                        "child",
                        "ops",
                        "flags",
                        "x",
                    ]
                ): rnd.choice(_VALUES),
            }
        return {**v, k: _mutate_json(v[k], rnd, depth + 1)}
    if isinstance(v, list) and v and depth < 8:
        i = rnd.randrange(len(v))
        r = rnd.random()
        if r < 0.15:
            return v[:i] + v[i + 1 :]
        if r < 0.3:
            return v[:i] + [v[i]] * rnd.randint(2, 5) + v[i:]
        return v[:i] + [_mutate_json(v[i], rnd, depth + 1)] + v[i + 1 :]
    if isinstance(v, int) and not isinstance(v, bool) and rnd.random() < 0.5:
        return v + rnd.choice([-1, 1, -v, v, 1 << 16, -(1 << 16)])
    return rnd.choice(_VALUES)


def mutate_structured(data: bytes, rnd: random.Random) -> bytes:
    """JSON-level mutation (falls back to byte mutation for non-JSON)."""
    try:
        v = json.loads(data)
    except (ValueError, RecursionError):
        return mutate(data, rnd)
    for _ in range(rnd.randint(1, 4)):
        v = _mutate_json(v, rnd)
    try:
        return json.dumps(v).encode()
    except (ValueError, RecursionError):
        return mutate(data, rnd)


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """A few random edits: byte flips, splices of interesting tokens, deletions,
    duplications of a chunk, number replacement."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(6)
        n = len(b)
        i = rnd.randrange(n + 1)
        if op == 0 and n:
            b[min(i, n - 1)] = rnd.randrange(256)
        elif op == 1:
            b[i:i] = rnd.choice(_INTERESTING)
        elif op == 2 and n:
            j = min(n, i + rnd.randint(1, 64))
            del b[i:j]
        elif op == 3 and n:
            j = min(n, i + rnd.randint(1, 256))
            chunk = bytes(b[i:j])
            b[j:j] = chunk * rnd.randint(1, 4)
        elif op == 4:
            # replace a run of digits by an interesting number
            k = i
            while k < n and chr(b[k]).isdigit():
                k += 1
            b[i:k] = rnd.choice(_INTERESTING[:10])
        else:
            # cut: truncated inputs
            del b[i:]
    return bytes(b[: 1 << 16])
