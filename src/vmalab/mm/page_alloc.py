"""Physical pages: anonymous folios, page-cache pages and the shared zero page.

Models the folio state the VMA layer observes (mm/page_alloc.c allocation,
``folio->_mapcount``, ``folio->mapping`` for anonymous folios) in compact parallel
arrays indexed by pfn, so that millions of populated pages cost a few bytes each.
Contents are kept only for pages that were written (``data``); any other page reads as
zeroes.

Simplifications: one folio is one 4 KiB page (large folios and THP are not modelled);
``_refcount`` is not stored, because without pins it is derived (mapcount, plus one for
a page-cache reference).

Page contents (a deliberate simplification of the folio's data, which in the kernel is
always a whole 4 KiB frame): ``data[pfn]`` exists for exactly the pages that were
written (a store, pwrite, a CoW copy of a written page; ``pfn in data`` is what the model
uses for "dirty"), and holds one of

* ``bytes`` ``b`` of at most PAGE_SIZE bytes: the page is ``b`` followed by zeroes. It is
  immutable, so a CoW copy (``copy``) shares it with its source instead of copying, as
  the kernel shares the folio until wp_page_copy; a store builds a new ``bytes``. Stores
  that end within ``PROMOTE`` bytes of the page start keep this form;
* ``bytearray`` of PAGE_SIZE bytes: a private, mutable buffer, for a page written past
  ``PROMOTE`` (a store into it costs nothing extra). ``copy`` from such a page first
  freezes it into ``bytes`` (trailing zeroes dropped) that both pages then share; the
  next store to either makes it private again.

Every form reads back exactly the bytes written. ``stored`` is the sum of ``len()`` of
the values (a run shared by CoW counts once per page that holds it: an upper bound on
what is stored, never more than one page each); the ``stored_bytes`` budget
(``vmalab.budget``) bounds it.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Final

from vmalab.mm.pagetable import PAGE_SIZE

if TYPE_CHECKING:
    from vmalab.mm.slab import Budget

KIND_FREE: Final = 0
KIND_ANON: Final = 1
KIND_PAGECACHE: Final = 2
KIND_ZERO: Final = 3

ZERO_PFN: Final = 0

#: A written page keeps the compact ``bytes`` form while its contents end within this many
#: bytes of the page start; a store past it promotes the page to a private 4 KiB buffer.
PROMOTE: Final = 512


class PhysMem:
    """Every page frame of one ``Kernel``.

    ``kind[pfn]`` is one of the KIND_* values; ``mapcount[pfn]`` counts the PTEs mapping
    the page (``folio_mapcount()``); ``owner[pfn]`` is the anon_vma id of an anonymous
    folio (``folio->mapping`` with PAGE_MAPPING_ANON) or the inode number of a page-cache
    page.
    """

    __slots__ = (
        "kind",
        "mapcount",
        "owner",
        "data",
        "free_pfns",
        "nr_anon",
        "nr_pagecache",
        "budget",
        "lazyfree",
        "stored",
    )

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.kind = bytearray([KIND_ZERO])
        self.mapcount = array("i", [0])
        self.owner = array("I", [0])  # anon_vma ids and inode numbers fit 32 bits
        self.data: dict[int, bytes | bytearray] = {}
        #: Bytes held by ``data`` (the sum of the values' lengths).
        self.stored = 0
        self.free_pfns = array("Q")
        self.nr_anon = 0
        self.nr_pagecache = 0
        # MADV_FREE'd anonymous folios (!PG_swapbacked, clean PTE): reclaim discards them
        # unless a store dirtied them since.
        self.lazyfree: set[int] = set()

    def alloc(self, kind: int, owner: int) -> int:
        """Allocate a page frame. Models mm/page_alloc.c:folio_alloc (order 0).

        Raises LimitFailure (an AllocFailure) with nothing changed past the ``pages``
        budget (``vmalab.budget``)."""
        b = self.budget
        if b is not None:
            b.check_alloc("pages", self.nr_anon + self.nr_pagecache, b.pages, "page")
        if self.free_pfns:
            pfn = self.free_pfns.pop()
            self.kind[pfn] = kind
            self.mapcount[pfn] = 0
            self.owner[pfn] = owner
        else:
            pfn = len(self.kind)
            self.kind.append(kind)
            self.mapcount.append(0)
            self.owner.append(owner)
        if kind == KIND_ANON:
            self.nr_anon += 1
        else:
            self.nr_pagecache += 1
        return pfn

    def free(self, pfn: int) -> None:
        """Return a page frame. Models mm/page_alloc.c:free_unref_folios."""
        if self.kind[pfn] == KIND_ANON:
            self.nr_anon -= 1
        else:
            self.nr_pagecache -= 1
        self.kind[pfn] = KIND_FREE
        d = self.data.pop(pfn, None)
        if d is not None:
            self.stored -= len(d)
        self.lazyfree.discard(pfn)
        self.free_pfns.append(pfn)

    def read(self, pfn: int, off: int, n: int) -> bytes:
        """``n`` bytes of page ``pfn`` from offset ``off`` (at most to the page end)."""
        d = self.data.get(pfn)
        if d is None:
            return bytes(n)
        if isinstance(d, bytearray):
            return bytes(d[off : off + n])
        r = d[off : off + n]
        want = min(off + n, PAGE_SIZE) - off
        if len(r) < want:
            r += bytes(want - len(r))
        return r

    def write(self, pfn: int, off: int, b: bytes | memoryview) -> None:
        """Store bytes into page ``pfn`` at ``off`` (within the page)."""
        n = len(b)
        end = off + n
        d = self.data.get(pfn)
        if d is None:
            if end <= PROMOTE:
                v: bytes | bytearray = bytes(off) + b if off else bytes(b)
            else:
                v = bytearray(PAGE_SIZE)
                v[off:end] = b
            self._store(pfn, v, 0)
        elif isinstance(d, bytearray):
            d[off:end] = b
        else:
            m = len(d)
            if max(m, end) <= PROMOTE:
                if off >= m:
                    v = d + bytes(off - m) + b if off > m else d + b
                else:
                    v = d[:off] + b + d[end:]
            else:
                v = bytearray(PAGE_SIZE)
                v[:m] = d
                v[off:end] = b
            self._store(pfn, v, m)

    def copy(self, dst: int, src: int) -> None:
        """Copy page contents. Models mm/memory.c:__wp_page_copy_user / copy_mc_user_highpage.

        The copy shares the source's immutable contents (a private buffer is frozen into
        ``bytes`` first); see the module docstring."""
        if dst == src:
            return
        data = self.data
        d = data.get(src)
        old = data.get(dst)
        if d is None:
            if old is not None:
                del data[dst]
                self.stored -= len(old)
            return
        if isinstance(d, bytearray):
            f = bytes(d).rstrip(b"\0")
            data[src] = f
            self.stored += len(f) - PAGE_SIZE
            d = f
        self._store(dst, d, len(old) if old is not None else 0)

    def _store(self, pfn: int, v: bytes | bytearray, old: int) -> None:
        """Set ``data[pfn] = v`` in place of contents of ``old`` bytes, and account it
        against the ``stored_bytes`` budget. Storing cannot fail half-way, so a breach is
        only recorded: the syscall finishes and its boundary raises it (the next
        allocation fails meanwhile)."""
        self.data[pfn] = v
        grow = len(v) - old
        if grow > 0:
            b = self.budget
            if b is not None and b.stored_bytes is not None and self.stored + grow > b.stored_bytes:
                b.trip("stored_bytes", b.stored_bytes, "page contents")
        self.stored += grow

    def zero_range(self, pfn: int, off: int, n: int) -> None:
        """Zero part of a page (folio_zero_range)."""
        d = self.data.get(pfn)
        if d is None:
            return
        if isinstance(d, bytearray):
            d[off : off + n] = bytes(n)
            return
        m = len(d)
        if off >= m:
            return
        end = off + n
        v = d[:off] if end >= m else d[:off] + bytes(n) + d[end:]
        self._store(pfn, v, m)
