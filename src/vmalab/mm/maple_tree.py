"""The VMA index of an mm: what the maple tree (lib/maple_tree.c) does for mm->mm_mt.

``VmaTree`` maps each VMA's ``vm_start`` to the VMA in address order. It knows nothing of
VMAs but their keys, so it is generic over what it stores (``MmStruct`` stores
``VmArea``s); mm/mm_types.py builds the mm on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Generic, TypeVar

V = TypeVar("V")


def bisect_right(a: list[int], x: int) -> int:
    """``bisect.bisect_right`` on a list of ints, written out: compiled, it compares
    machine integers and boxes nothing (the C function is called through the generic
    call path with ``x`` boxed)."""
    lo = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


class VmaTree(Generic[V]):
    """The VMA index of an mm: the maple tree's job (lib/maple_tree.c), as a two-level
    B-tree of leaves.

    Each leaf is a sorted list of ``vm_start`` keys with a parallel list of the VMAs
    (like a maple leaf's pivots and slots, but up to ``leaf_max`` entries); ``_firsts``
    holds each leaf's lowest key, so a lookup is two bisections (O(log n), ``bisect_right``), an
    insert or erase a bisection plus a move within one leaf, and a store that keeps
    the key (``replace``) or the order (``rekey``) moves nothing. Leaves split in half past
    ``leaf_max`` entries and go when empty. Iteration (``values()``, ``keys()``,
    ``items()``) is in address order. Neighbours are not searched here: the VMAs carry
    ``vm_prev``/``vm_next`` (MmStruct keeps them), as a maple-tree iterator reaches the
    adjacent slot in O(1). Not modelled: the maple tree's node layout, gaps and RCU.
    """

    __slots__ = ("_firsts", "_keys", "_vals", "_len", "leaf_max")

    def __init__(self, leaf_max: int = 512) -> None:
        self.leaf_max = leaf_max
        self._firsts: list[int] = []
        self._keys: list[list[int]] = []
        self._vals: list[list[V]] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(self._keys)

    def keys(self) -> Iterator[int]:
        """Every ``vm_start``, ascending."""
        return chain.from_iterable(self._keys)

    def values(self) -> Iterator[V]:
        """Every VMA, in address order (for_each_vma)."""
        return chain.from_iterable(self._vals)

    def items(self) -> Iterator[tuple[int, V]]:
        """(vm_start, VMA) pairs in address order."""
        return zip(chain.from_iterable(self._keys), chain.from_iterable(self._vals), strict=True)

    def clear(self) -> None:
        """Empty the index (__mt_destroy)."""
        self._firsts = []
        self._keys = []
        self._vals = []
        self._len = 0

    def floor(self, addr: int) -> V | None:
        """The VMA with the greatest ``vm_start <= addr`` (None if none)."""
        firsts = self._firsts
        i = bisect_right(firsts, addr) - 1
        if i < 0:
            return None
        return self._vals[i][bisect_right(self._keys[i], addr) - 1]

    def first(self) -> V | None:
        """The lowest VMA."""
        return self._vals[0][0] if self._vals else None

    def last(self) -> V | None:
        """The highest VMA."""
        return self._vals[-1][-1] if self._vals else None

    def _locate(self, key: int) -> tuple[int, int]:
        """(leaf, slot) of ``key``; KeyError if it is not indexed."""
        i = bisect_right(self._firsts, key) - 1
        if i >= 0:
            keys = self._keys[i]
            j = bisect_right(keys, key) - 1
            if keys[j] == key:
                return i, j
        raise KeyError(key)

    def __getitem__(self, key: int) -> V:
        i, j = self._locate(key)
        return self._vals[i][j]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        try:
            self._locate(key)
        except KeyError:
            return False
        return True

    def insert(self, key: int, vma: V) -> tuple[V | None, V | None]:
        """Index ``vma`` at ``key``, its ``vm_start`` (not yet indexed); returns its new
        (previous, next) VMAs in the index."""
        firsts = self._firsts
        self._len += 1
        if not firsts:
            firsts.append(key)
            self._keys.append([key])
            self._vals.append([vma])
            return None, None
        last_keys = self._keys[-1]
        if key > last_keys[-1]:  # an append (dup_mmap stores in address order)
            i = len(firsts) - 1
            keys = last_keys
            vals = self._vals[i]
            j = len(keys)
        else:
            i = bisect_right(firsts, key) - 1
            if i < 0:
                i = 0
                firsts[0] = key
            keys = self._keys[i]
            vals = self._vals[i]
            j = bisect_right(keys, key)
        if j and keys[j - 1] == key:
            self._len -= 1
            raise KeyError(f"vm_start {key:#x} already indexed")
        keys.insert(j, key)
        vals.insert(j, vma)
        n = len(keys)
        if j:
            prev: V | None = vals[j - 1]
        else:
            prev = self._vals[i - 1][-1] if i else None
        if j + 1 < n:
            nxt: V | None = vals[j + 1]
        else:
            nxt = self._vals[i + 1][0] if i + 1 < len(firsts) else None
        if n > self.leaf_max:
            self._split_leaf(i)
        return prev, nxt

    def append_leaf(self, keys: list[int], vals: list[V]) -> None:
        """Add a whole leaf after the last: ``keys`` ascending, all above every key
        indexed, one VMA each (at most ``leaf_max``). The index keeps both lists.

        For dup_mmap(), whose __mt_dup() builds the child's tree from copies of the
        parent's nodes rather than by one insert per VMA."""
        if not keys or len(keys) != len(vals) or len(keys) > self.leaf_max:
            raise ValueError(f"a leaf of {len(keys)} keys and {len(vals)} VMAs")
        if self._keys and keys[0] <= self._keys[-1][-1]:
            raise ValueError(f"leaf at {keys[0]:#x} not above the last key")
        self._firsts.append(keys[0])
        self._keys.append(keys)
        self._vals.append(vals)
        self._len += len(keys)

    def _split_leaf(self, i: int) -> None:
        """Split leaf ``i`` in half (it has grown past ``leaf_max`` entries)."""
        keys = self._keys[i]
        vals = self._vals[i]
        half = len(keys) >> 1
        self._keys.insert(i + 1, keys[half:])
        self._vals.insert(i + 1, vals[half:])
        self._firsts.insert(i + 1, keys[half])
        del keys[half:]
        del vals[half:]

    def erase(self, key: int) -> None:
        """Remove the entry at ``key`` (KeyError if none)."""
        i, j = self._locate(key)
        keys = self._keys[i]
        del keys[j]
        del self._vals[i][j]
        self._len -= 1
        if not keys:
            del self._keys[i]
            del self._vals[i]
            del self._firsts[i]
        elif j == 0:
            self._firsts[i] = keys[0]

    def replace(self, key: int, vma: V) -> None:
        """Point the entry at ``key`` at ``vma`` (a store over an unchanged range start)."""
        i, j = self._locate(key)
        self._vals[i][j] = vma

    def rekey(self, old: int, new: int) -> None:
        """Move the entry at ``old`` to ``new``; the caller keeps the order (no other key
        lies between them)."""
        i, j = self._locate(old)
        self._keys[i][j] = new
        if j == 0:
            self._firsts[i] = new

    def split_entry(self, key: int, below: V, addr: int, above: V) -> None:
        """The entry at ``key`` becomes ``below`` and ``above`` is indexed at ``addr``
        right after it (``key < addr`` < the next key): __split_vma's store of both
        halves, with one insert."""
        i, j = self._locate(key)
        keys = self._keys[i]
        vals = self._vals[i]
        vals[j] = below
        keys.insert(j + 1, addr)
        vals.insert(j + 1, above)
        self._len += 1
        if len(keys) > self.leaf_max:
            self._split_leaf(i)

    def leaves(self) -> list[tuple[list[int], list[V]]]:
        """Every leaf as (keys, VMAs), in address order: the lists themselves, to be read
        only (``Kernel.check()``'s walk, mm/validate.py:validate_mm)."""
        return list(zip(self._keys, self._vals, strict=True))

    def check_shape(self) -> str | None:
        """The leaves' shape without the order of the keys inside a leaf: what is wrong
        with it, or None. With every key equal to its VMA's ``vm_start`` and the VMAs
        disjoint in iteration order (what validate_mm checks), the keys are ascending too."""
        if not (len(self._firsts) == len(self._keys) == len(self._vals)):
            return "leaf lists of different lengths"
        total = 0
        prev_key = -1
        for first, keys, vals in zip(self._firsts, self._keys, self._vals, strict=True):
            if not keys:
                return "empty leaf"
            if len(keys) != len(vals):
                return f"leaf at {first:#x}: {len(keys)} keys, {len(vals)} VMAs"
            if keys[0] != first:
                return f"leaf at {first:#x}: first key {keys[0]:#x}"
            if keys[0] <= prev_key:
                return f"leaf at {first:#x}: keys out of order"
            prev_key = keys[-1]
            total += len(keys)
        if total != self._len:
            return f"{total} entries, length {self._len}"
        return None

    def check(self) -> str | None:
        """The index's own shape, the key order inside each leaf included: what is wrong
        with it, or None."""
        bad = self.check_shape()
        if bad is not None:
            return bad
        for first, keys in zip(self._firsts, self._keys, strict=True):
            if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
                return f"leaf at {first:#x}: keys out of order"
        return None
