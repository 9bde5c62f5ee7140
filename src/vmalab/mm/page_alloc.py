"""Physical pages: anonymous folios, page-cache pages and the shared zero page.

Models the folio state the VMA layer observes (mm/page_alloc.c allocation,
``folio->_mapcount``, ``folio->mapping`` for anonymous folios) in compact parallel
arrays indexed by pfn, so that millions of populated pages cost a few bytes each.
Contents are kept only for pages that were written (``data``); any other page reads as
zeroes.

Simplifications: one folio is one 4 KiB page (large folios and THP are not modelled);
``_refcount`` is not stored, because without pins it is derived (mapcount, plus one for
a page-cache reference).
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
    )

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.kind = bytearray([KIND_ZERO])
        self.mapcount = array("i", [0])
        self.owner = array("I", [0])  # anon_vma ids and inode numbers fit 32 bits
        self.data: dict[int, bytearray] = {}
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
        self.data.pop(pfn, None)
        self.lazyfree.discard(pfn)
        self.free_pfns.append(pfn)

    def read(self, pfn: int, off: int, n: int) -> bytes:
        """``n`` bytes of page ``pfn`` from offset ``off``."""
        d = self.data.get(pfn)
        return bytes(d[off : off + n]) if d is not None else bytes(n)

    def write(self, pfn: int, off: int, b: bytes | memoryview) -> None:
        """Store bytes into page ``pfn`` at ``off``."""
        d = self.data.get(pfn)
        if d is None:
            self._store_one()
            d = self.data[pfn] = bytearray(PAGE_SIZE)
        d[off : off + len(b)] = b

    def copy(self, dst: int, src: int) -> None:
        """Copy page contents. Models mm/memory.c:__wp_page_copy_user / copy_mc_user_highpage."""
        d = self.data.get(src)
        if d is not None:
            if dst not in self.data:
                self._store_one()
            self.data[dst] = bytearray(d)
        else:
            self.data.pop(dst, None)

    def _store_one(self) -> None:
        """Account one more page of stored contents against the ``stored_bytes`` budget.
        Storing cannot fail half-way, so a breach is only recorded: the syscall finishes
        and its boundary raises it (the next allocation fails meanwhile)."""
        b = self.budget
        if (
            b is not None
            and b.stored_bytes is not None
            and (len(self.data) + 1) * PAGE_SIZE > b.stored_bytes
        ):
            b.trip("stored_bytes", b.stored_bytes, "page contents")

    def zero_range(self, pfn: int, off: int, n: int) -> None:
        """Zero part of a page (folio_zero_range)."""
        d = self.data.get(pfn)
        if d is not None:
            d[off : off + n] = bytes(n)
