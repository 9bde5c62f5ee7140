"""Protection keys on a CPU **with OSPKE** (``Kernel(pku=True)``): MODEL-ONLY.

The project's machine has no ``pku``/``ospke`` in /proc/cpuinfo, so the live kernel
cannot check any of these; each case is ported from the kernel's selftests
(tools/testing/selftests/mm/protection_keys.c) and follows the kernel functions its
docstring names (read in torvalds/linux). The no-OSPKE behaviour, which the live kernel
does check, is tests/test_coverage_selftests.py::test_pkeys_without_ospke_and_execute_only_memory.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmalab import uapi
from vmalab.errors import SegmentationFault
from vmalab.kernel import Kernel
from vmalab.mm import pkeys
from vmalab.process import Process

PAGE = 4096
ANON = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
RW = uapi.PROT_READ | uapi.PROT_WRITE
AD = pkeys.PKEY_DISABLE_ACCESS
WD = pkeys.PKEY_DISABLE_WRITE


def proc() -> tuple[Kernel, Process]:
    k = Kernel(pku=True)
    return k, k.spawn()


def errno_of(fn: object, *args: int) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)  # type: ignore[operator]
    return ei.value.errno or 0


def pkuerr(fn: object, *args: object) -> SegmentationFault:
    with pytest.raises(SegmentationFault) as ei:
        fn(*args)  # type: ignore[operator]
    assert ei.value.signal == "SIGSEGV"
    return ei.value


def test_alloc_all_keys_then_enospc() -> None:
    """Model-only (no PKU here). protection_keys.c:test_pkey_alloc_exhaust; mm_pkey_alloc()
    hands out 1..15 lowest first (key 0 is the mm's from init_new_context()), then
    sys_pkey_alloc() is ENOSPC; bad flags or init_val are EINVAL first."""
    k, p = proc()
    assert errno_of(p.pkey_alloc, 1, 0) == errno.EINVAL
    assert errno_of(p.pkey_alloc, 0, 4) == errno.EINVAL
    assert [p.pkey_alloc(0, 0) for _ in range(15)] == list(range(1, 16))
    assert errno_of(p.pkey_alloc) == errno.ENOSPC
    p.pkey_free(7)
    assert p.pkey_alloc() == 7
    p.pkey_free(0)  # key 0 passes mm_pkey_is_allocated() like any other: it can go
    assert p.pkey_alloc() == 0
    k.check()


def test_freed_key_0_becomes_the_execute_only_key() -> None:
    """Model-only (kernel quirk, from the code). After pkey_free(0), the first PROT_EXEC
    mprotect's __execute_only_pkey() allocates key 0 (ffz) and access-disables it;
    __arch_override_mprotect_pkey() only takes a key > 0, so the VMA keeps key 0 and
    every key-0 load now faults SEGV_PKUERR."""
    k, p = proc()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.pkey_free(0)
    p.mprotect(a, PAGE, uapi.PROT_EXEC)
    assert p.pkey_exec_only == 0 and p.pkey_get(0) == AD
    assert pkuerr(p.read, a + PAGE, 1).code == "SEGV_PKUERR"
    k.check()


def test_alloc_sets_init_rights_in_pkru() -> None:
    """Model-only (no selftest of its own). New processes start at init_pkru_value
    (arch/x86/mm/pkeys.c: every key but 0 access-disabled); sys_pkey_alloc() →
    arch_set_user_pkey_access() replaces the key's two PKRU bits with ``init_val``."""
    _k, p = proc()
    assert p.pkru == 0x55555554
    assert [p.pkey_get(i) for i in (0, 1, 15)] == [0, AD, AD]
    key = p.pkey_alloc(0, WD)
    assert p.pkey_get(key) == WD
    key2 = p.pkey_alloc(0, 0)
    assert p.pkey_get(key2) == 0


def test_free_unallocated_and_mprotect_with_unallocated_key() -> None:
    """Model-only. protection_keys.c:test_pkey_syscalls_on_non_allocated_pkey and
    test_pkey_syscalls_bad_args: mm_pkey_free() and do_mprotect_pkey() refuse a key
    mm_pkey_is_allocated() denies (EINVAL): never allocated, freed, out of range."""
    _k, p = proc()
    a = p.mmap(0, PAGE, RW, ANON)
    assert errno_of(p.pkey_free, 3) == errno.EINVAL
    assert errno_of(p.pkey_free, 16) == errno.EINVAL
    for bad in (3, 16, -2, 0x100):
        assert errno_of(p.pkey_mprotect, a, PAGE, RW, bad) == errno.EINVAL
    key = p.pkey_alloc()
    p.pkey_free(key)
    assert errno_of(p.pkey_free, key) == errno.EINVAL
    assert errno_of(p.pkey_mprotect, a, PAGE, RW, key) == errno.EINVAL


def test_access_disable_load_faults_pkuerr() -> None:
    """Model-only. protection_keys.c:test_read_of_access_disabled_region(_with_page_already_mapped)
    and test_write_of_access_disabled_region: a load from a VMA
    whose key PKRU access-disables is SIGSEGV/SEGV_PKUERR (arch/x86/mm/fault.c:
    access_error → bad_area_access_error), present page or not; pkey_set(0) allows it."""
    k, p = proc()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.write(a, b"x")  # present PTE
    key = p.pkey_alloc(0, AD)
    p.pkey_mprotect(a, 2 * PAGE, RW, key)
    assert pkuerr(p.read, a, 1).code == "SEGV_PKUERR"
    assert pkuerr(p.read, a + PAGE, 1).code == "SEGV_PKUERR"  # never faulted in
    assert pkuerr(p.write, a, b"y").code == "SEGV_PKUERR"
    p.pkey_set(key, 0)
    assert p.read(a, 1) == b"x"
    k.check()


def test_write_disable_store_faults_load_works() -> None:
    """Model-only. protection_keys.c:test_read_of_write_disabled_region and
    test_write_of_write_disabled_region: PKEY_DISABLE_WRITE
    lets loads through and makes stores SEGV_PKUERR (__pkru_allows_write)."""
    _k, p = proc()
    a = p.mmap(0, PAGE, RW, ANON)
    key = p.pkey_alloc(0, WD)
    p.pkey_mprotect(a, PAGE, RW, key)
    assert p.read(a, 2) == b"\0\0"
    assert pkuerr(p.write, a, b"z").code == "SEGV_PKUERR"
    p.pkey_set(key, 0)
    p.write(a, b"z")


def test_pkey_fault_comes_before_the_vma_check() -> None:
    """Model-only. access_error() asks the key (X86_PF_PK, arch_vma_access_permitted)
    before VM_WRITE: a store to a read-only VMA with an access-disabled key is
    SEGV_PKUERR, without a key it is a plain SIGSEGV."""
    _k, p = proc()
    a = p.mmap(0, 2 * PAGE, uapi.PROT_READ, ANON)
    key = p.pkey_alloc(0, AD)
    p.pkey_mprotect(a, PAGE, uapi.PROT_READ, key)
    assert pkuerr(p.write, a, b"1").code == "SEGV_PKUERR"
    assert pkuerr(p.write, a + PAGE, b"1").code == ""


def test_execute_only_memory() -> None:
    """Model-only. protection_keys.c:test_executing_on_unreadable_memory and
    test_implicit_mprotect_exec_only_memory: mmap/mprotect(PROT_EXEC) gets the
    execute-only key (__execute_only_pkey: allocated once, PKRU access-disabled), a load
    is SEGV_PKUERR, an instruction fetch is allowed; the key is not the user's
    (pkey_free and pkey_mprotect: EINVAL); mprotect to PROT_READ|PROT_EXEC goes back
    to key 0 (__arch_override_mprotect_pkey); smaps shows ProtectionKey."""
    k, p = proc()
    a = p.mmap(0, PAGE, uapi.PROT_EXEC, ANON)
    x = p.pkey_exec_only
    assert x == 1 and p.pkey_get(x) == AD
    assert p.vmas()[0].flags >= {"ex"}
    assert "ProtectionKey:         1\n" in p.smaps()
    assert pkuerr(p.read, a, 1).code == "SEGV_PKUERR"
    p.fault(a, "exec")
    assert errno_of(p.pkey_free, x) == errno.EINVAL
    assert errno_of(p.pkey_mprotect, a, PAGE, uapi.PROT_EXEC, x) == errno.EINVAL
    c = p.mmap(0, PAGE, uapi.PROT_EXEC | 0x10, ANON)  # not exactly PROT_EXEC: key 0
    assert p.read(c, 1) == b"\0"
    b = p.mmap(0, PAGE, RW, ANON)
    p.mprotect(b, PAGE, uapi.PROT_EXEC)
    assert p.pkey_exec_only == x and p.pkey_alloc() == 2  # one key for all of them
    p.pkey_set(x, 0)  # the user re-enables it; the next PROT_EXEC disables it again
    p.mprotect(b, PAGE, uapi.PROT_EXEC)
    assert p.pkey_get(x) == AD
    p.mprotect(a, PAGE, uapi.PROT_READ | uapi.PROT_EXEC)
    assert p.read(a, 1) == b"\0"
    assert "ProtectionKey:         0\n" in p.smaps()
    k.check()


def test_explicit_key_wins_and_plain_mprotect_keeps_it() -> None:
    """Model-only. protection_keys.c:test_pkey_alloc_free_attach_pkey0 and
    test_mprotect_with_pkey_0; __arch_override_mprotect_pkey: pkey_mprotect's key is
    never overridden (key 0 with PROT_EXEC stays 0); plain mprotect() keeps the VMA's
    key (vma_pkey); a VMA may keep a key after pkey_free() (sys_pkey_free: "We could
    provide warnings…")."""
    k, p = proc()
    a = p.mmap(0, PAGE, RW, ANON)
    keys = [p.pkey_alloc() for _ in range(15)]
    for key in keys:
        p.pkey_free(key)
    for prot in (uapi.PROT_READ, uapi.PROT_WRITE, uapi.PROT_EXEC, RW, RW | uapi.PROT_EXEC):
        p.pkey_mprotect(a, PAGE, prot, 0)
        assert "ProtectionKey:         0\n" in p.smaps()
    assert p.pkey_exec_only == -1
    key = p.pkey_alloc()
    p.pkey_mprotect(a, PAGE, uapi.PROT_EXEC, key)
    assert p.pkey_exec_only == -1
    p.mprotect(a, PAGE, uapi.PROT_READ)
    assert f"ProtectionKey:  {key:>8}\n" in p.smaps()
    p.pkey_free(key)
    assert f"ProtectionKey:  {key:>8}\n" in p.smaps()
    k.check()


def test_fork_keeps_keys_and_pkru() -> None:
    """Model-only (no selftest of its own). arch_dup_pkeys() copies the allocation map
    and execute-only key, fpu_clone() the PKRU: the child sees the parent's rights and
    keys, and its own changes stay its own (the model's PKRU is per process)."""
    k, p = proc()
    a = p.mmap(0, PAGE, RW, ANON)
    key = p.pkey_alloc(0, AD)
    p.pkey_mprotect(a, PAGE, RW, key)
    c = p.fork()
    assert (c.pkey_map, c.pkey_exec_only, c.pkru) == (p.pkey_map, p.pkey_exec_only, p.pkru)
    assert pkuerr(c.read, a, 1).code == "SEGV_PKUERR"
    assert c.pkey_alloc() == key + 1
    c.pkey_set(key, 0)
    assert c.read(a, 1) == b"\0"
    assert pkuerr(p.read, a, 1).code == "SEGV_PKUERR"
    c.pkey_free(key)
    p.pkey_mprotect(a, PAGE, RW, key)  # still the parent's
    k.check()


def test_pkey_get_set_arguments() -> None:
    """Model-only. glibc pkey_get/pkey_set: EINVAL outside 0..15 or for unknown rights;
    they are RDPKRU/WRPKRU, which need OSPKE: without it the model says ENOSYS."""
    _k, p = proc()
    assert errno_of(p.pkey_get, 16) == errno.EINVAL
    assert errno_of(p.pkey_set, 1, 4) == errno.EINVAL
    q = Kernel(pku=False).spawn()
    assert errno_of(q.pkey_get, 0) == errno.ENOSYS
    assert errno_of(q.pkey_set, 0, 0) == errno.ENOSYS


def test_no_ospke_smaps_has_no_protection_key() -> None:
    """Checked against the live kernel's output shape: without OSPKE, show_smap() prints
    no ProtectionKey line (arch_pkeys_enabled() is false)."""
    q = Kernel(pku=False).spawn()
    q.mmap(0, PAGE, uapi.PROT_EXEC, ANON)
    assert "ProtectionKey" not in q.smaps()
    assert q.pkey_map == 0 and q.pkey_exec_only == 0


def test_check_catches_bad_pkey_state() -> None:
    """Kernel.check() (vmalab.mm.pkeys.check_task) flags an execute-only key that is not
    allocated, and a key on a VMA without OSPKE."""
    k, p = proc()
    p.mmap(0, PAGE, uapi.PROT_EXEC, ANON)
    p.pkey_map &= ~(1 << p.pkey_exec_only)
    with pytest.raises(AssertionError, match="execute-only pkey"):
        k.check()
    k2 = Kernel(pku=False)
    q = k2.spawn()
    q.mmap(0, PAGE, RW, ANON)
    next(iter(q.mm.mm_mt.values())).vm_flags |= pkeys.pkey_vm_flags(3)
    with pytest.raises(AssertionError, match="without OSPKE"):
        k2.check()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "free", "pkey_mprotect", "mprotect", "set", "read", "write"]),
        st.integers(0, 3),
        st.integers(-1, 16),
        st.sampled_from([0, uapi.PROT_READ, RW, uapi.PROT_EXEC, uapi.PROT_READ | 4]),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_random_pkey_ops_keep_invariants(ops: list[tuple[str, int, int, int]]) -> None:
    """Model-only. Random pkey syscalls, PKRU writes and accesses on four pages keep
    Kernel.check() (the pkey invariants included) true, and every access the model lets
    through is one PKRU allows for the VMA's key."""
    k, p = proc()
    base = p.mmap(0, 4 * PAGE, RW, ANON)
    for op, page, key, prot in ops:
        a = base + page * PAGE
        try:
            if op == "alloc":
                p.pkey_alloc(0, key & 3)
            elif op == "free":
                p.pkey_free(key)
            elif op == "pkey_mprotect":
                p.pkey_mprotect(a, PAGE, prot, key)
            elif op == "mprotect":
                p.mprotect(a, PAGE, prot)
            elif op == "set":
                p.pkey_set(key, prot & 3)
            else:
                vma = p.mm.find_vma(a)
                assert vma is not None
                if op == "read":
                    p.read(a, 1)
                else:
                    p.write(a, b"w")
                write = op == "write"
                allow = pkeys.pkru_allows_write if write else pkeys.pkru_allows_read
                assert allow(p.pkru, pkeys.vma_pkey(vma))
        except (OSError, SegmentationFault):
            pass
        k.check()
