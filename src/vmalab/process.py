"""A process: its mm, its file descriptors, and the syscall entry points of the contract.

Each method is the syscall boundary: it validates the process, turns injected
allocation failures into ENOMEM, and otherwise defers to the ``vmalab.mm`` module that
models the kernel function.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Final

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm import hugetlb, khugepaged, pkeys, shm, userfaultfd
from vmalab.mm.brk import install_special_mapping, sys_brk
from vmalab.mm.fault import fault_in, find_fault_vma_for_access
from vmalab.mm.filemap import devzero_mmap_file
from vmalab.mm.flags import VM_LOCKED, VM_LOCKONFAULT
from vmalab.mm.fork import dup_mmap, exit_mmap
from vmalab.mm.madvise import do_madvise, do_process_madvise, madvise_set_anon_name
from vmalab.mm.mincore import do_mincore, mdwe_after_fork, prctl_set_mdwe
from vmalab.mm.mlock import do_mlock, do_mlockall, do_munlock, do_munlockall
from vmalab.mm.mm_types import PAGE_SIZE, MmStruct
from vmalab.mm.mmap import do_mmap, do_vmi_munmap, mm_populate, page_align
from vmalab.mm.mprotect import do_mprotect
from vmalab.mm.mremap import do_mremap
from vmalab.mm.mseal import do_mseal
from vmalab.mm.msync import do_msync
from vmalab.mm.pagetable import PageTables
from vmalab.mm.slab import AllocFailure
from vmalab.mm.vma import raise_hole_error
from vmalab.proc import VmaView, pagemap_entries, show_maps, show_smaps, vma_views

# The syscall boundary and the file syscalls live in vmalab/task.py; these names stay here.
from vmalab.task import KernelView as KernelView
from vmalab.task import Task
from vmalab.task import check_int as _check_int
from vmalab.task import syscall as _syscall

U64: Final = (1 << 64) - 1


_NEW_KEY = object()  # Process() is for Process._new only


class Process(Task):
    """A modelled process (task with its own mm). Create with ``Kernel.spawn()``."""

    def __init__(
        self, kernel: KernelView[Process], mm: MmStruct | None = None, _key: object = None
    ) -> None:
        # constructed through __init__ (not object.__new__): mypyc's native classes need it
        if _key is not _NEW_KEY:
            raise TypeError("use Kernel.spawn() or Process.fork()")
        self.kernel = kernel
        self.pid = kernel.alloc_pid()
        slabs = kernel.ctx.slabs
        if mm is None:
            slabs.alloc(slabs.mm_cachep)
            try:
                mm = MmStruct(kernel.ctx, PageTables(slabs), self.pid)
            except AllocFailure:
                slabs.free(slabs.mm_cachep)
                raise
        self.mm = mm
        self.fds = {}
        self._dead = False
        self.cap_sys_admin = True
        self.cap_ipc_lock = True
        self.rlimit_memlock = 8 << 20
        self.mdwe = 0
        # init_new_context(): only with OSPKE is key 0 allocated and the exec-only key -1;
        # PKRU starts at init_pkru_value (vmalab.mm.pkeys; one PKRU per process).
        self.pkey_map, self.pkey_exec_only = pkeys.new_context(kernel.ctx.pku)
        self.pkru = pkeys.init_pkru(kernel.ctx.pku)
        kernel.attach_pid(self)

    @classmethod
    def _new(cls, kernel: KernelView[Process], mm: MmStruct | None = None) -> Process:
        return cls(kernel, mm, _NEW_KEY)

    def __repr__(self) -> str:
        return f"<Process {self.pid}{' (exited)' if self._dead else ''}>"

    # --- address space -----------------------------------------------------------------

    @_syscall
    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> int:
        """mmap(2). Models arch/x86/kernel/sys_x86_64.c:sys_mmap → mm/mmap.c:do_mmap."""
        _check_int(addr, length, prot, flags, fd, offset)
        if addr < 0 or addr > U64 or length > U64 or offset > U64:
            raise kernel_error(errno.EINVAL, "argument out of range")
        file = None
        if not flags & uapi.MAP_ANONYMOUS:
            file = self.fds.get(fd)
            if file is None:
                raise kernel_error(errno.EBADF, f"fd {fd}")
        k = self.kernel
        if file is not None and file.inode.kind == "uffd":
            # measured EACCES (MAP_SHARED, PROT_READ|PROT_WRITE); the kernel would say
            # ENODEV (no f_op->mmap) for the requests that pass do_mmap's mode checks
            raise kernel_error(errno.EACCES, "userfaultfd cannot be mapped")
        if file is not None and file.inode.kind == "devzero":
            file = devzero_mmap_file(
                k.ctx.fs, flags, file, page_align(length)
            )  # drivers/char/mem.c:mmap_zero
        length, file = hugetlb.ksys_mmap_pgoff_hugetlb(
            k.ctx.fs, hugetlb.pool_of(k.ctx), length, flags, file
        )
        if file is not None:
            file.get()  # ksys_mmap_pgoff holds the file across vm_mmap_pgoff
        try:
            addr, populate = do_mmap(self.mm, addr, length, prot, flags, file, offset)
        finally:
            if file is not None:
                file.put()
        if populate:
            mm_populate(self.mm, addr, populate, ignore_errors=True)
        return addr

    @_syscall
    def brk(self, addr: int) -> int:
        """brk(2): the new program break (the old one when refused).

        Models mm/mmap.c:SYSCALL_DEFINE1(brk). The break starts where exec put it
        (``set_brk()``); :meth:`set_brk_base` stands in for that.
        """
        _check_int(addr)
        return sys_brk(self.mm, addr)

    def set_brk_base(self, start_brk: int, brk: int | None = None) -> None:
        """Set mm->start_brk and mm->brk as binfmt_elf.c:load_elf_binary does at exec."""
        self.mm.start_brk = start_brk
        self.mm.brk = start_brk if brk is None else brk

    def set_start_stack(self, addr: int) -> None:
        """Set mm->start_stack (binfmt_elf.c:create_elf_tables); names the ``[stack]`` VMA."""
        self.mm.start_stack = addr

    @_syscall
    def install_special_mapping(self, addr: int, length: int, vm_flags: int, name: str) -> None:
        """A ``[vdso]``/``[vvar]``-like mapping. Models mm/vma.c:_install_special_mapping."""
        _check_int(addr, length, vm_flags)
        install_special_mapping(self.mm, addr, page_align(length), vm_flags, name)

    @_syscall
    def fault(self, addr: int, access: str = "read") -> None:
        """A page fault at ``addr`` with no data moved: what a recorded fault replays.

        Models arch/x86/mm/fault.c:do_user_addr_fault (also the path of a kernel-mode fault
        on a user address, as copy_to_user() raises): find the VMA, growing a stack below
        it, access_error() (``exec`` needs VM_EXEC, ``write`` VM_WRITE), then
        handle_mm_fault(). Raises SegmentationFault where the CPU would get a signal.
        Simplification: a read or exec fault on a special mapping (vDSO, vvar) changes
        nothing, since the pages behind those are not modelled.
        """
        _check_int(addr)
        if access not in ("read", "write", "exec"):
            raise ValueError(f"access must be read, write or exec, not {access!r}")
        vma = find_fault_vma_for_access(self.mm, addr, access == "exec")
        if vma.special_name is not None and access != "write":
            # special_mapping_fault()/vvar_fault() insert the vDSO page or the vvar pfn;
            # those pages are not modelled, and no VMA state changes
            return
        fault_in(self.mm, addr, access == "write", access == "exec")

    @_syscall
    def unlink(self, path: str) -> None:
        """unlink(2) on the tmpfs. Models fs/namei.c:do_unlinkat."""
        self.kernel.ctx.fs.unlink(path)

    @_syscall
    def rename(self, old: str, new: str) -> None:
        """rename(2) on the tmpfs. Models fs/namei.c:do_renameat2."""
        self.kernel.ctx.fs.rename(old, new)

    @_syscall
    def munmap(self, addr: int, length: int) -> None:
        """munmap(2). Models mm/mmap.c:__vm_munmap → do_vmi_munmap."""
        _check_int(addr, length)
        if addr & (PAGE_SIZE - 1) or addr < 0:
            raise kernel_error(errno.EINVAL, "unaligned address")
        if length <= 0:
            raise kernel_error(errno.EINVAL, "zero length")
        length = page_align(length)
        if not length or addr > (1 << 47) - PAGE_SIZE or length > (1 << 47) - PAGE_SIZE - addr:
            raise kernel_error(errno.EINVAL, "range beyond TASK_SIZE")
        do_vmi_munmap(self.mm, addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2). Models mm/mprotect.c:do_mprotect_pkey."""
        raise_hole_error(self.mprotect_ret(addr, length, prot))

    @_syscall
    def mprotect_ret(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2) with the walk's ENOMEM returned as the syscall returns it: 0, or
        -ENOMEM when the range has a hole (the VMAs before it are changed); other
        errors raise OSError. The replay's form: a log's failed calls cost no exception.
        Models mm/mprotect.c:do_mprotect_pkey."""
        _check_int(addr, length, prot)
        return do_mprotect(self.mm, addr, length, prot)

    @_syscall
    def mremap(
        self, old_addr: int, old_size: int, new_size: int, flags: int = 0, new_addr: int = 0
    ) -> int:
        """mremap(2). Models mm/mremap.c:do_mremap."""
        _check_int(old_addr, old_size, new_size, flags, new_addr)
        return do_mremap(self.mm, old_addr, old_size, new_size, flags, new_addr)

    def madvise(self, addr: int, length: int, advice: int) -> None:
        """madvise(2). Models mm/madvise.c:do_madvise."""
        raise_hole_error(self.madvise_ret(addr, length, advice))

    @_syscall
    def madvise_ret(self, addr: int, length: int, advice: int) -> int:
        """madvise(2) with the holes' ENOMEM returned as the syscall returns it: 0, or
        -ENOMEM when the range has holes (the mapped parts got the advice); other errors
        raise OSError. The replay's form. Models mm/madvise.c:do_madvise."""
        _check_int(addr, length, advice)
        return do_madvise(self.mm, addr, length, advice)

    @_syscall
    def process_madvise(self, ranges: Sequence[tuple[int, int]], advice: int) -> int:
        """process_madvise(2) on this process's own mm (PIDFD_SELF); returns bytes advised.

        Models mm/madvise.c:SYSCALL_DEFINE5(process_madvise) → vector_madvise."""
        for a, n in ranges:
            _check_int(a, n)
        if len(ranges) > 1024:
            raise kernel_error(errno.EINVAL, "more than UIO_MAXIOV ranges")
        return do_process_madvise(self.mm, ranges, advice)

    @_syscall
    def mlock(self, addr: int, length: int) -> None:
        """mlock(2). Models mm/mlock.c:do_mlock(VM_LOCKED)."""
        _check_int(addr, length)
        do_mlock(self.mm, addr, length, VM_LOCKED)

    @_syscall
    def mlock2(self, addr: int, length: int, flags: int = 0) -> None:
        """mlock2(2); MLOCK_ONFAULT sets VM_LOCKONFAULT and populates nothing.

        Models mm/mlock.c:SYSCALL_DEFINE3(mlock2) → do_mlock."""
        _check_int(addr, length, flags)
        if flags & ~uapi.MLOCK_ONFAULT:
            raise kernel_error(errno.EINVAL, "unknown mlock2 flags")
        do_mlock(
            self.mm, addr, length, VM_LOCKED | (VM_LOCKONFAULT if flags & uapi.MLOCK_ONFAULT else 0)
        )

    @_syscall
    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        """mseal(2) (syscall 462). Models mm/mseal.c:do_mseal."""
        _check_int(addr, length, flags)
        do_mseal(self.mm, addr, length, flags)

    @_syscall
    def mlockall(self, flags: int) -> None:
        """mlockall(2) (MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT). Models mm/mlock.c."""
        _check_int(flags)
        do_mlockall(self.mm, flags)

    @_syscall
    def munlockall(self) -> None:
        """munlockall(2). Models mm/mlock.c:sys_munlockall."""
        do_munlockall(self.mm)

    @_syscall
    def prctl(
        self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int | str | None = 0
    ) -> int:
        """prctl(2): PR_SET_MDWE, PR_GET_MDWE and PR_SET_VMA (others: EINVAL).

        Models kernel/sys.c:prctl_set_mdwe / prctl_get_mdwe, and prctl_set_vma for
        PR_SET_VMA_ANON_NAME, whose name (``arg5``) is a str, or None to clear it; that
        needs ``Kernel.anon_vma_name`` (CONFIG_ANON_VMA_NAME), else EINVAL as here.
        """
        if option == uapi.PR_SET_VMA:
            _check_int(arg2, arg3, arg4)
            if not self.kernel.anon_vma_name:
                raise kernel_error(errno.EINVAL, "PR_SET_VMA without CONFIG_ANON_VMA_NAME")
            if arg2 != uapi.PR_SET_VMA_ANON_NAME:
                raise kernel_error(errno.EINVAL, f"PR_SET_VMA operation {arg2}")
            if arg5 is not None and not isinstance(arg5, str):
                raise TypeError("the PR_SET_VMA_ANON_NAME name is a str or None")
            madvise_set_anon_name(self.mm, arg3, arg4, arg5)
            return 0
        if not isinstance(arg5, int):
            raise TypeError("arg5 must be an int")
        _check_int(option, arg2, arg3, arg4, arg5)
        if option == uapi.PR_SET_MDWE:
            self.mdwe = prctl_set_mdwe(self.mdwe, arg2, arg3, arg4, arg5)
            return 0
        if option == uapi.PR_GET_MDWE:
            if arg2 or arg3 or arg4 or arg5:
                raise kernel_error(errno.EINVAL, "unused prctl arguments must be 0")
            return self.mdwe
        raise kernel_error(errno.EINVAL, f"prctl option {option} is not modelled")

    @_syscall
    def pkey_alloc(self, flags: int = 0, init_rights: int = 0) -> int:
        """pkey_alloc(2). Models mm/mprotect.c:sys_pkey_alloc (vmalab.mm.pkeys: without
        OSPKE, this machine's CPU, it never succeeds)."""
        _check_int(flags, init_rights)
        return pkeys.pkey_alloc(self, flags, init_rights)

    @_syscall
    def pkey_free(self, pkey: int) -> None:
        """pkey_free(2). Models mm/mprotect.c:sys_pkey_free."""
        _check_int(pkey)
        pkeys.pkey_free(self, pkey)

    @_syscall
    def pkey_mprotect(self, addr: int, length: int, prot: int, pkey: int) -> None:
        """pkey_mprotect(2). Models mm/mprotect.c:do_mprotect_pkey (key -1: mprotect)."""
        _check_int(addr, length, prot, pkey)
        err = do_mprotect(
            self.mm,
            addr,
            length,
            prot,
            pkey_check=lambda: pkeys.check_mprotect_pkey(self, pkey),
            pkey=pkey,
        )
        raise_hole_error(err)

    @_syscall
    def pkey_get(self, pkey: int) -> int:
        """glibc pkey_get(3): ``pkey``'s PKEY_DISABLE_* rights in this process's PKRU
        (RDPKRU; the model has one PKRU per process). Models the instruction, see
        vmalab.mm.pkeys.pkey_get; OSError(ENOSYS) without OSPKE."""
        _check_int(pkey)
        return pkeys.pkey_get(self, pkey)

    @_syscall
    def pkey_set(self, pkey: int, rights: int) -> None:
        """glibc pkey_set(3): set ``pkey``'s PKEY_DISABLE_* rights in this process's PKRU
        (WRPKRU). See vmalab.mm.pkeys.pkey_set; OSError(ENOSYS) without OSPKE."""
        _check_int(pkey, rights)
        pkeys.pkey_set(self, pkey, rights)

    @_syscall
    def mincore(self, addr: int, length: int) -> bytes:
        """mincore(2): one byte per page (1: resident). Models mm/mincore.c."""
        _check_int(addr, length)
        return do_mincore(self.mm, addr, length)

    @_syscall
    def msync(self, addr: int, length: int, flags: int) -> None:
        """msync(2). Models mm/msync.c:sys_msync (no VMA changes; errnos only)."""
        _check_int(addr, length, flags)
        do_msync(self.mm, addr, length, flags)

    # --- SysV shared memory (ipc/shm.c; see vmalab.mm.shm) --------------------------------

    @_syscall
    def shmget(self, key: int, size: int, shmflg: int) -> int:
        """shmget(2): the segment id. Models ipc/shm.c:ksys_shmget."""
        _check_int(key, size, shmflg)
        return shm.ksys_shmget(self.mm, shm.ns_of(self.kernel.ctx), key, size, shmflg)

    @_syscall
    def shmat(self, shmid: int, addr: int = 0, shmflg: int = 0) -> int:
        """shmat(2): the attach address. Models ipc/shm.c:do_shmat."""
        _check_int(shmid, addr, shmflg)
        return shm.do_shmat(self.mm, shm.ns_of(self.kernel.ctx), shmid, addr, shmflg)

    @_syscall
    def shmdt(self, addr: int) -> None:
        """shmdt(2). Models ipc/shm.c:ksys_shmdt."""
        _check_int(addr)
        shm.ksys_shmdt(self.mm, addr)

    @_syscall
    def shmctl(self, shmid: int, cmd: int) -> int:
        """shmctl(2), IPC_RMID only. Models ipc/shm.c:ksys_shmctl."""
        _check_int(shmid, cmd)
        return shm.ksys_shmctl(shm.ns_of(self.kernel.ctx), shmid, cmd)

    # --- userfaultfd registration (fs/userfaultfd.c; see vmalab.mm.userfaultfd) -------

    @_syscall
    def userfaultfd(self, flags: int = 0) -> int:
        """userfaultfd(2) (syscall 323): a new descriptor. Models new_userfaultfd."""
        _check_int(flags)
        return self._alloc_fd(userfaultfd.new_userfaultfd(self.mm, flags))

    @_syscall
    def uffdio_api(self, fd: int, features: int = 0, api: int = 0xAA) -> tuple[int, int]:
        """ioctl(UFFDIO_API): (features, ioctls). Models userfaultfd_api."""
        _check_int(fd, features, api)
        return userfaultfd.userfaultfd_api(userfaultfd.uffd_of(self._file(fd)), api, features)

    @_syscall
    def uffdio_register(self, fd: int, start: int, length: int, mode: int) -> int:
        """ioctl(UFFDIO_REGISTER): the range's ioctls. Models userfaultfd_register."""
        _check_int(fd, start, length, mode)
        uffd = userfaultfd.uffd_of(self._file(fd))
        return userfaultfd.userfaultfd_register(uffd, start, length, mode)

    @_syscall
    def uffdio_unregister(self, fd: int, start: int, length: int) -> None:
        """ioctl(UFFDIO_UNREGISTER). Models userfaultfd_unregister."""
        _check_int(fd, start, length)
        uffd = userfaultfd.uffd_of(self._file(fd))
        userfaultfd.userfaultfd_unregister(uffd, start, length)

    @_syscall
    def munlock(self, addr: int, length: int) -> None:
        """munlock(2). Models mm/mlock.c:sys_munlock."""
        _check_int(addr, length)
        do_munlock(self.mm, addr, length)

    # --- memory access -------------------------------------------------------------------

    @_syscall
    def read(self, addr: int, length: int) -> bytes:
        """A user load of ``length`` bytes; raises SegmentationFault like the CPU would.

        Models the user fault path, arch/x86/mm/fault.c:do_user_addr_fault.
        """
        _check_int(addr, length)
        if length < 0:
            raise ValueError("negative length")
        out = bytearray()
        phys = self.kernel.ctx.phys
        mm = self.mm
        a = addr
        end = addr + length
        while a < end:
            off = a & 4095
            n = min(4096 - off, end - a)
            _vma, pfn = fault_in(mm, a, False)
            out += phys.read(pfn, off, n)
            a += n
        return bytes(out)

    @_syscall
    def write(self, addr: int, data: bytes) -> None:
        """A user store of ``data``; raises SegmentationFault like the CPU would.

        Models the user fault path, arch/x86/mm/fault.c:do_user_addr_fault.
        """
        _check_int(addr)
        phys = self.kernel.ctx.phys
        mm = self.mm
        buf = bytes(data)  # the caller's own object when it is bytes already
        total = len(buf)
        # slices only for a store that spans pages (most stores, the replay's, do not)
        mv = memoryview(buf) if (addr & 4095) + total > 4096 else None
        pos = 0
        while pos < total:
            a = addr + pos
            off = a & 4095
            n = min(4096 - off, total - pos)
            _vma, pfn = fault_in(mm, a, True)
            phys.write(pfn, off, buf if mv is None else mv[pos : pos + n])
            phys.lazyfree.discard(pfn)  # the store dirties the PTE: no longer lazyfree
            pos += n

    # --- processes -------------------------------------------------------------------------

    @_syscall
    def fork(self) -> Process:
        """fork(2): a child with a copy of this address space (dup_mmap) and fd table.

        Models kernel/fork.c:copy_process → dup_mm (mm_alloc, pgd_alloc) → dup_mmap.

        On an allocation failure the half-built child is torn down as dup_mmap's error
        path does (exit_mmap of what was copied) and ENOMEM is raised.
        """
        k = self.kernel
        slabs = k.ctx.slabs
        slabs.alloc(slabs.mm_cachep)
        try:
            mm = MmStruct(k.ctx, PageTables(slabs), 0)
        except AllocFailure:
            slabs.free(slabs.mm_cachep)
            raise
        mm.mmap_base = self.mm.mmap_base
        # dup_mm() copies the whole mm_struct: the brk and stack fields come along
        mm.start_brk, mm.brk, mm.start_stack = self.mm.start_brk, self.mm.brk, self.mm.start_stack
        try:
            dup_mmap(mm, self.mm)
        except AllocFailure:
            exit_mmap(mm)
            slabs.free(slabs.mm_cachep)
            raise
        child = Process._new(k, mm)
        mm.owner_pid = child.pid
        child.cap_sys_admin = self.cap_sys_admin
        child.cap_ipc_lock = self.cap_ipc_lock
        child.rlimit_memlock = self.rlimit_memlock
        child.mdwe = mdwe_after_fork(self.mdwe)
        child.pkey_map, child.pkey_exec_only = self.pkey_map, self.pkey_exec_only  # arch_dup_pkeys
        child.pkru = self.pkru  # fpu_clone(): the child inherits the parent's PKRU
        for fd, f in self.fds.items():
            f.get()
            child.fds[fd] = f
        return child

    @_syscall
    def exit(self) -> None:
        """exit(2): free the address space and close every descriptor.

        Models kernel/exit.c:do_exit → exit_mm → mmput → mm/mmap.c:exit_mmap, and
        exit_files.
        """
        k = self.kernel
        exit_mmap(self.mm)
        for f in self.fds.values():
            f.put()
        self.fds.clear()
        k.ctx.slabs.free(k.ctx.slabs.mm_cachep)
        k.detach_pid(self.pid)
        self._dead = True

    # --- introspection ---------------------------------------------------------------------

    @_syscall
    def maps(self) -> str:
        """/proc/PID/maps. Models fs/proc/task_mmu.c:show_map."""
        return show_maps(self.mm)

    @_syscall
    def smaps(self) -> str:
        """/proc/PID/smaps. Models fs/proc/task_mmu.c:show_smap."""
        return show_smaps(self.mm)

    @_syscall
    def pagemap(self, addr: int, npages: int = 1) -> list[int]:
        """/proc/PID/pagemap entries for ``npages`` pages from ``addr`` (page-aligned down).

        Models fs/proc/task_mmu.c:pagemap_read.
        """
        _check_int(addr, npages)
        if npages < 0:
            raise ValueError("negative npages")
        return pagemap_entries(self.mm, addr & ~(PAGE_SIZE - 1), npages)

    @_syscall
    def vmas(self) -> list[VmaView]:
        """The VMAs, structured (see VmaView)."""
        return vma_views(self.mm)

    @_syscall
    def khugepaged_retractable(self, addr: int) -> bool:
        """Whether retract_page_tables() would retract the file VMA at ``addr``, per the design."""
        vma = self.mm.vma_lookup(addr)
        return vma is not None and khugepaged.retractable(vma)

    @property
    def alive(self) -> bool:
        """False once the process has exited."""
        return not self._dead
