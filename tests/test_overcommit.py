"""The commit charge (mm/util.c:__vm_enough_memory) in overcommit modes 0, 1 and 2.

Every Kernel here gets an explicit OvercommitConfig, so nothing depends on the host. The
figures the kernel gave on the project's machine (6.18.44, mode 0, 23.5 GiB RAM, no swap)
are in docs/api-extensions-coverage.md; ``test_live_*`` re-checks them where possible.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest

from vmalab import Kernel, uapi
from vmalab.mm.util import OvercommitConfig, host_overcommit, vm_commit_limit

G = 1 << 30
PAGE = 4096
RAM = OvercommitConfig(mode=0, totalram_pages=(23 * G + G // 2) // PAGE)
PRIV = uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS
SHARED = uapi.MAP_SHARED | uapi.MAP_ANONYMOUS
RW = uapi.PROT_READ | uapi.PROT_WRITE
A = 0x300000000000


def kernel(cfg: OvercommitConfig) -> Kernel:
    return Kernel("sticky", overcommit=cfg)


def committed(k: Kernel) -> int:
    return k.meminfo()["Committed_AS"] * 1024


def test_mode0_refuses_one_mapping_larger_than_ram_and_swap() -> None:
    k = kernel(RAM)
    p = k.spawn()
    for flags in (PRIV, SHARED):
        with pytest.raises(OSError) as e:
            p.mmap(0, 1 << 46, RW, flags)
        assert e.value.errno == errno.ENOMEM
    assert committed(k) == 0
    b = p.mmap(0, 1 << 46, RW, PRIV | uapi.MAP_NORESERVE)  # VM_NORESERVE: not charged
    p.munmap(b, 1 << 46)
    b = p.mmap(0, 1 << 46, uapi.PROT_READ, PRIV)  # read-only: not accountable
    p.munmap(b, 1 << 46)
    assert committed(k) == 0
    a = p.mmap(0, 23 * G, RW, PRIV)  # less than RAM: fine, whatever is committed already
    p.mmap(0, 23 * G, RW, PRIV)
    assert committed(k) == 46 * G
    p.munmap(a, 23 * G)
    assert committed(k) == 23 * G
    k.check()


def test_mode1_always_succeeds() -> None:
    k = kernel(RAM.with_(mode=1))
    p = k.spawn()
    p.mmap(0, 1 << 46, RW, PRIV)
    assert committed(k) == 1 << 46
    k.check()


def test_mode2_commit_limit_and_reserves() -> None:
    cfg = OvercommitConfig(
        mode=2,
        ratio=50,
        totalram_pages=(1 * G) // PAGE,
        total_swap_pages=(256 << 20) // PAGE,
        admin_reserve_kbytes=8192,
        user_reserve_kbytes=131072,
    )
    assert vm_commit_limit(cfg) == (512 << 20) // PAGE + (256 << 20) // PAGE
    k = kernel(cfg)
    assert k.meminfo()["CommitLimit"] == 768 << 10
    p = k.spawn()
    a = p.mmap(0, 700 << 20, RW, PRIV)
    with pytest.raises(OSError) as e:
        p.mmap(0, 100 << 20, RW, PRIV)
    assert e.value.errno == errno.ENOMEM
    # mode 2 ignores MAP_NORESERVE: no VM_NORESERVE, charged
    with pytest.raises(OSError):
        p.mmap(0, 100 << 20, RW, PRIV | uapi.MAP_NORESERVE)
    # but not read-only private memory, which is never charged
    r = p.mmap(0, 100 << 20, uapi.PROT_READ, PRIV)
    with pytest.raises(OSError):
        p.mprotect(r, 100 << 20, RW)  # becoming writable charges it
    # the admin reserve applies only without CAP_SYS_ADMIN
    p.munmap(a, 700 << 20)
    p.munmap(r, 100 << 20)
    limit = (768 << 20) - (100 << 20) // 32  # minus min(total_vm / 32, user reserve)
    b = p.mmap(0, 760 << 20, RW, PRIV)
    p.munmap(b, 760 << 20)
    p.cap_sys_admin = False
    with pytest.raises(OSError):
        p.mmap(0, 762 << 20, RW, PRIV)
    assert limit > 0
    k.check()


def test_mode2_fork_charges_the_child() -> None:
    cfg = OvercommitConfig(mode=2, ratio=100, totalram_pages=(1 * G) // PAGE)
    k = kernel(cfg)
    p = k.spawn()
    a = p.mmap(0, 600 << 20, RW, PRIV)
    with pytest.raises(OSError) as e:
        p.fork()
    assert e.value.errno == errno.ENOMEM
    assert committed(k) == 600 << 20
    p.madvise(a, 600 << 20, uapi.MADV_DONTFORK)  # VM_DONTCOPY VMAs are not charged
    c = p.fork()
    assert committed(k) == 600 << 20
    c.exit()
    k.check()


def test_measured_charges_of_mmap_mprotect_mremap_and_shmem() -> None:
    """The deltas of Committed_AS measured on 6.18.44 (docs/api-extensions-coverage.md)."""
    k = kernel(RAM)
    p = k.spawn()
    steps = []

    def step(f: object) -> None:
        before = committed(k)
        assert callable(f)
        f()
        steps.append((committed(k) - before) // G)

    step(lambda: p.mmap(A, 4 * G, RW, PRIV | uapi.MAP_FIXED))
    step(lambda: p.mremap(A, 4 * G, 1 * G, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, A + 8 * G))
    step(lambda: p.munmap(A + 8 * G, G))
    step(lambda: p.mmap(A, 2 * G, RW, PRIV | uapi.MAP_FIXED))
    step(lambda: p.mremap(A, 2 * G, 3 * G, uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED, A + 8 * G))
    step(
        lambda: p.mremap(
            A + 8 * G,
            3 * G,
            3 * G,
            uapi.MREMAP_MAYMOVE | uapi.MREMAP_FIXED | uapi.MREMAP_DONTUNMAP,
            A + 16 * G,
        )
    )
    step(lambda: p.munmap(A, 32 * G))
    step(lambda: p.mmap(A, 2 * G, uapi.PROT_READ, PRIV | uapi.MAP_FIXED))
    step(lambda: p.mprotect(A, 2 * G, RW))
    step(lambda: p.mprotect(A, 2 * G, uapi.PROT_READ))
    step(lambda: p.mmap(A, 2 * G, RW, SHARED | uapi.MAP_FIXED))
    step(lambda: p.munmap(A, 2 * G))
    assert steps == [4, 0, -1, 2, 1, 3, -6, 0, 2, -2, 2, -2]
    # the shrinking MREMAP_FIXED move leaked 3 GiB, as on the kernel
    assert committed(k) == 3 * G == k.commit_leaked * PAGE
    p.exit()
    assert committed(k) == 3 * G
    k.check()


def test_map_fixed_over_accounted_memory_charges_only_the_difference() -> None:
    cfg = OvercommitConfig(mode=2, ratio=100, totalram_pages=(1 * G) // PAGE)
    k = kernel(cfg)
    p = k.spawn()
    p.mmap(A, 800 << 20, RW, PRIV | uapi.MAP_FIXED)
    p.write(A, b"x")
    # replacing accounted memory with as much needs no new charge
    p.mmap(A, 800 << 20, RW, PRIV | uapi.MAP_FIXED)
    # a refused MAP_FIXED leaves the old mapping in place
    p.mprotect(A, 800 << 20, uapi.PROT_READ)
    with pytest.raises(OSError):
        p.mmap(A, 1000 << 20, RW, PRIV | uapi.MAP_FIXED)
    assert len(p.vmas()) == 1
    k.check()


def test_config_validation_and_host_defaults() -> None:
    with pytest.raises(ValueError):
        OvercommitConfig(mode=3)
    with pytest.raises(ValueError):
        OvercommitConfig(ratio=-1)
    h = host_overcommit()
    assert h.mode in (0, 1, 2) and h.totalram_pages > 0
    assert Kernel("sticky").overcommit == h


@pytest.mark.live
def test_live_mode0_refuses_2_pow_46() -> None:
    """The kernel side of the first test, in a child process (as root, mode 0 here)."""
    h = host_overcommit()
    if h.mode != 0 or (1 << 46) // PAGE <= h.totalram_pages + h.total_swap_pages:
        pytest.skip("needs overcommit_memory=0 and less than 64 TiB of RAM + swap")
    code = textwrap.dedent("""
        import ctypes
        c = ctypes.CDLL(None, use_errno=True)
        c.mmap.restype = ctypes.c_void_p
        c.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_long]
        out = []
        for flags in (0x22, 0x21, 0x22 | 0x4000):
            r = c.mmap(None, 1 << 46, 3, flags, -1, 0)
            out.append(ctypes.get_errno() if r in (None, (1 << 64) - 1) else 0)
        print(out)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == f"[{errno.ENOMEM}, {errno.ENOMEM}, 0]"
