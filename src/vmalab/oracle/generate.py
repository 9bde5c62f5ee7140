"""Random programs: ``Gen`` draws ops from the op classes' generator rules
(``vmalab.program.base.GenRule``), plus multi-op scenarios; ``random_program(seed)``."""

from __future__ import annotations

import random
from typing import Any

from vmalab import program as P
from vmalab.program import GenRule, Program
from vmalab.program.ops.memory import move_op


class Gen:
    """Random program builder (arena of 48 pages, memfd slot 0 of 64 pages).

    One op is drawn from the table of every op class's ``gen_rules`` (sorted by their
    ``pos``), with the weights those rules give for the current state and depth; then a
    random arena range is drawn and handed to the rule. Implements
    ``vmalab.program.base.GenState``."""

    def __init__(self, rnd: random.Random, arena: int = 48, *, thp: bool = False) -> None:
        self.r = rnd
        self.arena = arena
        #: every program takes the 1024-page arena and the THP scenario (``fuzz --thp``)
        self.thp = thp
        self.files: list[int] = []
        # mremap moves made so far, (origin, len, destination): later ops map beside the
        # origin and move the range back, so that the moved VMA (whose pgoff is its
        # origin's) meets a pgoff-contiguous neighbour, faulted or not (issue 14).
        self.moves: list[tuple[int, int, int]] = []
        self.maps: list[tuple[int, int]] = []  # ranges mmapped so far
        self.memlock = False  # a memlock op dropped CAP_IPC_LOCK
        self.lockall = False  # an mlockall op locked (part of) the runner itself
        self.segs: list[tuple[int, int]] = []  # shm segments by slot: (key, pages)
        self.attaches: list[int] = []  # shmat addresses
        self.uffd = False  # the userfaultfd slot is open
        self.uffd_api = False  # ... and UFFDIO_API was drawn
        self.devzero = False  # the /dev/zero slot is open
        self.rules = rules()

    def rng(self, maxlen: int = 12) -> tuple[int, int]:
        """A random arena range; 40 % on a 4-page grid (more exact adjacency, merges and
        splits)."""
        if self.r.random() < 0.4:
            a = 4 * self.r.randrange(self.arena // 4)
            n = min(4 * self.r.randint(1, 3), self.arena - a)
            return a, n
        a = self.r.randrange(self.arena)
        n = self.r.randint(1, min(maxlen, self.arena - a))
        return a, n

    def prot(self) -> str:
        """A random ``prot`` (mostly read-write)."""
        return self.r.choice(["rw", "rw", "rw", "r", "none", "rwx", "x"])

    def op(self, depth: int) -> dict[str, Any]:
        """One random op object at fork depth ``depth``."""
        # Only the rules that may be drawn now (an exact random.Random never picks a zero
        # weight, so leaving them out draws the same ops; other generators, such as
        # hypothesis' randoms(), might).
        weighted = [(g, w) for g in self.rules if (w := g.weight(self, depth)) > 0]
        rule = self.r.choices([g for g, _ in weighted], [w for _, w in weighted])[0]
        a, n = self.rng()
        return rule.make(self, depth, a, n)

    def move_scenario(self) -> list[dict[str, Any]]:
        """A range moved away and back beside neighbours (the mremap merge class).

        mmap F, fault part of it (or not), move it away (maybe MREMAP_DONTUNMAP), map
        neighbours right before and/or after its origin (faulted or not, maybe forked
        over), then move F back (maybe DONTUNMAP) to the origin: copy_vma() then merges a
        VMA whose pgoff is the origin's with pgoff-contiguous neighbours.
        """
        r = self.r
        n = r.randint(1, 6)
        a = r.randrange(1, self.arena - n - 1)
        to = r.randrange(self.arena - n + 1)
        while a - n < to < a + n:
            to = r.randrange(self.arena - n + 1)
        ops: list[dict[str, Any]] = [{"op": "mmap", "addr": a, "len": n}]
        if r.random() < 0.8:
            k = r.randint(1, n)
            ops.append(
                {
                    "op": "write",
                    "addr": a + r.randrange(n - k + 1),
                    "len": k,
                    "byte": r.randrange(1, 256),
                }
            )
        away = move_op(a, n, to)
        if r.random() < 0.3:
            away["dontunmap"] = True
        ops.append(away)
        sides = r.choice([("left",), ("right",), ("left", "right")])
        for side in sides:
            k = r.randint(1, min(4, a) if side == "left" else 4)
            start = a - k if side == "left" else a + n
            k = min(k, self.arena - start)
            if k <= 0:
                continue
            if not away.get("dontunmap"):
                ops.append({"op": "mmap", "addr": start, "len": k})
            if r.random() < 0.3:
                ops.append({"op": "write", "addr": start, "len": 1})
        if r.random() < 0.3:
            # drawn after the whole body but inserted anywhere in it: none of the slots
            # (segments, userfaultfd, /dev/zero) that the body may open later
            saved = (self.segs, self.attaches, self.uffd, self.uffd_api, self.devzero)
            self.segs, self.attaches, self.uffd, self.uffd_api, self.devzero = (
                [],
                [],
                False,
                False,
                False,
            )
            ops.append({"op": "fork", "child": [self.op(1) for _ in range(r.randint(0, 2))]})
            self.segs, self.attaches, self.uffd, self.uffd_api, self.devzero = saved
        if away.get("dontunmap"):
            # the origin is still mapped (empty): the move back must go beside it
            ops.append({"op": "munmap", "addr": a, "len": n})
        back = move_op(to, n, a)
        if r.random() < 0.3:
            back["dontunmap"] = True
            if r.random() < 0.3:
                back["fixed"] = False
        ops.append(back)
        self.maps.append((a, n))
        return ops

    def thp_scenario(self) -> list[dict[str, Any]]:
        """A 2 MiB-aligned region (arena of 1024 pages), mostly MADV_HUGEPAGE: THP and huge
        zero page faults, then ops aimed at the huge PMD (issue 14): MADV_COLLAPSE, partial
        and whole zaps, frees, protection changes, guard markers, munmap of part, fork
        with CoW, mremap to an aligned or unaligned address. A tenth are shmem collapses
        (``shmem_collapse_scenario``)."""
        r = self.r
        if r.random() < 0.1:
            return self.shmem_collapse_scenario()
        base = r.choice([0, 512])
        n = r.choice([512, 512, 600]) if base == 0 else 512
        ops: list[dict[str, Any]] = [{"op": "mmap", "addr": base, "len": n}]
        advice = r.choice(["hugepage", "hugepage", "hugepage", "nohugepage", None])
        if advice is not None:
            ops.append({"op": "madvise", "addr": base, "len": n, "advice": advice})
        for _ in range(r.randint(1, 3)):
            page = base + r.randrange(n)
            ops.append({"op": r.choice(["read", "write"]), "addr": page, "len": 1})
        for _ in range(r.randint(0, 4)):
            ops.append(self._thp_op(base, n))
        self.maps.append((base, n))
        return ops

    def _thp_op(self, base: int, n: int) -> dict[str, Any]:
        """One op aimed at the THP region [base, base+n)."""
        r = self.r
        k = r.choice([1, 1, 2, 16])
        a = base + r.randrange(n - k + 1)
        t = r.random()

        def over(op: dict[str, Any], p_whole: float) -> dict[str, Any]:
            whole = r.random() < p_whole
            return {**op, "addr": base if whole else a, "len": 512 if whole else k}

        if t < 0.2:
            return over({"op": "madvise", "advice": "collapse"}, 0.7)
        if t < 0.45:
            adv = r.choice(["dontneed", "free", "pageout", "cold", "guard_install", "nohugepage"])
            return over({"op": "madvise", "advice": adv}, 0.25)
        if t < 0.55:
            return over({"op": "mprotect", "prot": r.choice(["r", "rw"])}, 0.5)
        if t < 0.62:
            return {"op": "munmap", "addr": a, "len": k}
        if t < 0.75:
            child = [{"op": r.choice(["write", "read"]), "addr": a, "len": 1}]
            if r.random() < 0.5:
                child.append({"op": "madvise", "addr": base, "len": 512, "advice": "collapse"})
            return {"op": "fork", "child": child}
        if t < 0.82 and n == 512:
            to = (512 - base) + r.choice([0, 0, 1])
            return {
                "op": "mremap",
                "addr": base,
                "old_len": 512,
                "new_len": 512,
                "maymove": True,
                "to": min(to, 512),
            }
        return {"op": r.choice(["write", "read"]), "addr": a, "len": k}

    def shmem_collapse_scenario(self) -> list[dict[str, Any]]:
        """Two 2 MiB-aligned mappings of one 512-page memfd (slot 3), touched, maybe one
        guarded or private and written, then MADV_COLLAPSE of one: collapse_file() and
        retract_page_tables() (the RFC's THP claim)."""
        r = self.r
        self.files.append(3)
        ops: list[dict[str, Any]] = [
            {"op": "memfd", "file": 3},
            {"op": "ftruncate", "file": 3, "pages": 512},
        ]
        if r.random() < 0.7:
            ops.append({"op": "pwrite", "file": 3, "offset": r.randrange(512), "len": 1})
        second = r.choice(["shared", "shared", "private"])
        ops += [
            {"op": "mmap", "addr": 0, "len": 512, "flags": ["shared"], "file": 3},
            {"op": "mmap", "addr": 512, "len": 512, "flags": [second], "file": 3},
        ]
        for _ in range(r.randint(0, 3)):
            ops.append({"op": r.choice(["read", "write"]), "addr": r.randrange(1024), "len": 1})
        if r.random() < 0.4:
            g = 512 + r.randrange(512)
            ops.append({"op": "madvise", "addr": g, "len": 1, "advice": "guard_install"})
            if r.random() < 0.4:
                ops.append({"op": "madvise", "addr": 512, "len": 512, "advice": "guard_remove"})
        target = r.choice([0, 0, 512])
        ops.append({"op": "madvise", "addr": target, "len": 512, "advice": "collapse"})
        for _ in range(r.randint(0, 2)):
            ops.append(self._thp_op(target, 512))
        self.maps += [(0, 512), (512, 512)]
        return ops

    def ipc_scenario(self) -> list[dict[str, Any]]:
        """SysV shm, userfaultfd or hugetlb early in a program, so that the ops drawn
        after it (attaches, registrations, accesses, forks) meet it (issue 14)."""
        r = self.r
        t = r.random()
        if t < 0.4:
            s = len(self.segs)
            pages = r.randint(1, 8)
            self.segs.append((-1 - s, pages))
            ops: list[dict[str, Any]] = [{"op": "shmget", "seg": s, "size": pages * P.PAGE}]
            for _ in range(r.randint(1, 2)):
                a = r.randrange(self.arena - pages)
                ops.append({"op": "shmat", "seg": s, "addr": a})
                self.maps.append((a, pages))
                self.attaches.append(a)
                if r.random() < 0.5:
                    ops.append({"op": "write", "addr": a, "len": r.randint(1, pages)})
            if r.random() < 0.3:
                ops.append({"op": "shmctl", "seg": s})
            return ops
        if t < 0.8 or self.arena < 512:
            self.uffd = self.uffd_api = True
            a, n = self.rng()
            ops = [
                {"op": "mmap", "addr": a, "len": n},
                {"op": "userfaultfd", "file": 8},
                {"op": "uffdio_api", "file": 8},
            ]
            if r.random() < 0.5:
                ops.append({"op": "write", "addr": a, "len": r.randint(1, n)})
            k = r.randint(1, n)
            b = a + r.randrange(n - k + 1)
            mode = r.choice([["missing"], ["wp"], ["missing", "wp"]])
            ops.append({"op": "uffdio_register", "file": 8, "addr": b, "len": k, "mode": mode})
            self.maps.append((a, n))
            return ops
        base = 512 * r.randrange(self.arena // 512)
        self.maps.append((base, 512))
        if r.random() < 0.5:
            # memfd_create(MFD_HUGETLB) against the host's pool (empty here: ENOMEM)
            self.files.append(4)
            return [
                {"op": "memfd", "file": 4, "flags": ["hugetlb"]},
                {"op": "ftruncate", "file": 4, "pages": 512},
                {
                    "op": "mmap",
                    "addr": base,
                    "len": 512,
                    "flags": [r.choice(["shared", "private"])],
                    "file": 4,
                },
                {"op": "write", "addr": base + r.randrange(512), "len": 1},
            ]
        return [
            {
                "op": "mmap",
                "addr": base,
                "len": 512,
                "flags": ["private", "anonymous", "noreserve"],
                "huge": 21,
            },
            {"op": "write", "addr": base + r.randrange(512), "len": 1},
        ]

    def program(self) -> dict[str, Any]:
        ops: list[dict[str, Any]] = []
        if self.thp or self.r.random() < 0.06:
            self.arena = 1024
        if self.r.random() < 0.4:
            self.files.append(0)
            mfd: dict[str, Any] = {"op": "memfd", "file": 0}
            if self.r.random() < 0.5:
                mfd["flags"] = ["allow_sealing"]
            ops += [mfd, {"op": "ftruncate", "file": 0, "pages": 64}]
            if self.r.random() < 0.5:
                ops.append({"op": "pwrite", "file": 0, "offset": 0, "len": 16, "byte": 0x11})
        if self.r.random() < 0.2:
            self.files.append(1)
            ops += [
                {"op": "open", "file": 1, "name": "f1", "flags": ["rdwr", "creat"]},
                {"op": "ftruncate", "file": 1, "pages": self.r.choice([8, 32, 64])},
            ]
            if self.r.random() < 0.5:
                self.files.append(2)
                ops.append({"op": "open", "file": 2, "name": "f1", "flags": ["rdonly"]})
        pre = self.ipc_scenario() if self.r.random() < 0.25 else []
        body = pre + [self.op(0) for _ in range(self.r.randint(3, 16))]
        if self.r.random() < 0.25:
            at = self.r.randint(0, len(body))
            body[at:at] = self.move_scenario()
        if self.arena == 1024:
            body[0:0] = self.thp_scenario()
        ops += body
        return {"format": P.FORMAT, "version": P.VERSION, "arena_pages": self.arena, "ops": ops}


_Gen = Gen  # the name before the oracle package


def rules() -> list[GenRule]:
    """Every op class's generator rules, in draw-table order."""
    return sorted((g for cls in P.OPS.values() for g in cls.gen_rules), key=lambda g: g.pos)


def random_program(seed: int, *, thp: bool = False) -> Program:
    """A random valid program, determined by ``seed`` (and ``thp``: every program with
    the 1024-page arena and the THP scenario)."""
    src = f"random-thp:{seed}" if thp else f"random:{seed}"
    return P.from_json(_Gen(random.Random(seed), thp=thp).program(), src)
