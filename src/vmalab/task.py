"""The task side of a process: the syscall boundary and the file descriptor table.

Split out of :mod:`vmalab.process` (which re-exports ``KernelView``, ``_syscall`` and
``_check_int``): :class:`Task` is the base of ``Process`` and holds the fields of the
task (``task_struct`` with its ``files_struct``) and the file syscalls, which in the
kernel live outside mm/ too: the fd table of fs/file.c, fs/open.c (open, ftruncate,
fallocate), mm/memfd.c and the shmem read/write paths of mm/shmem.c.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

from vmalab import uapi
from vmalab.errors import kernel_error
from vmalab.mm import filemap, hugetlb
from vmalab.mm.mm_types import MmStruct
from vmalab.mm.slab import AllocFailure

if TYPE_CHECKING:
    from vmalab.budget import Budget
    from vmalab.mm.mm_types import MmContext

ProcT = TypeVar("ProcT", contravariant=True)


class KernelView(Protocol[ProcT]):
    """What a Process uses of its ``vmalab.kernel.Kernel`` (which creates it, and so
    stands above this module: only this protocol names it here). ``ProcT`` is the process
    class (``vmalab.process.Process``, which stands above this module too)."""

    #: The machine as mm/ sees it (slab caches, physical memory, tmpfs, configuration).
    ctx: MmContext
    budget: Budget
    #: CONFIG_ANON_VMA_NAME (prctl(PR_SET_VMA_ANON_NAME) works only with it).
    anon_vma_name: bool

    def alloc_pid(self) -> int: ...
    def attach_pid(self, proc: ProcT) -> None: ...
    def detach_pid(self, pid: int) -> None: ...


P = ParamSpec("P")
R = TypeVar("R")


def syscall(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a syscall: a dead process raises ProcessLookupError; AllocFailure is ENOMEM.

    A breach of the kernel's ``Budget`` (vmalab's host-safety limits) raises
    ``ResourceLimitError`` instead, however the syscall ended (an ENOMEM, a swallowed
    MAP_POPULATE failure, an OOM SIGKILL): the op has unwound as for an allocation
    failure, so the state is consistent. An exhausted wall-time budget stops a syscall
    before it starts, except exit(), which only frees.
    """
    exempt = fn.__name__ == "exit"
    positional = cast("Callable[..., R]", fn)

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # typed as the Task it is, so that the compiled build reads these fields natively
        self = cast(Task, args[0])
        if self._dead:
            raise ProcessLookupError(errno.ESRCH, f"process {self.pid} has exited")
        budget: Budget = self.kernel.budget
        if budget.deadline is not None and not exempt and budget.out_of_time():
            raise_breach(budget)
        try:
            # without keywords the call needs no dict (most calls: the replay's, the runners')
            r = fn(*args, **kwargs) if kwargs else positional(*args)
        except AllocFailure as e:
            breach = budget.take()
            if breach is not None:
                raise breach from None
            raise kernel_error(errno.ENOMEM, f"allocation from {e} failed") from None
        except BaseException:
            breach = budget.take()
            if breach is not None:
                raise breach from None
            raise
        if budget.breach is not None:
            raise_breach(budget)
        return r

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def raise_breach(budget: Budget) -> None:
    """Raise the budget's pending ResourceLimitError, if any."""
    breach = budget.take()
    if breach is not None:
        raise breach


def check_int(*vals: object) -> None:
    """Reject non-int syscall arguments (as ctypes would refuse them) with TypeError."""
    for v in vals:
        if type(v) is not int:
            if isinstance(v, int) and not isinstance(v, bool):
                continue  # int subclasses such as IntEnum members
            raise TypeError(f"expected an int, got {type(v).__name__}")


class Task:
    """The fields of a modelled task and its file syscalls; ``vmalab.process.Process``
    (the address-space syscalls, fork and exit) derives from it."""

    kernel: KernelView[Any]
    pid: int
    mm: MmStruct
    fds: dict[int, filemap.File]
    _dead: bool
    #: Whether the task has CAP_SYS_ADMIN (no admin reserve in overcommit mode 2).
    #: Default True: the live runner runs as root. Inherited by fork children.
    cap_sys_admin: bool
    #: CAP_IPC_LOCK (no RLIMIT_MEMLOCK checks) and RLIMIT_MEMLOCK in bytes (default
    #: 8 MiB, the kernel's MLOCK_LIMIT and this machine's `ulimit -l`). Inherited on fork.
    cap_ipc_lock: bool
    rlimit_memlock: int
    #: PR_MDWE_* bits (the kernel keeps them in mm->flags; see vmalab.mm.mincore).
    mdwe: int
    #: mm->context.pkey_allocation_map and execute_only_pkey (see vmalab.mm.pkeys).
    pkey_map: int
    pkey_exec_only: int
    #: PKRU (two bits per key: access-disable, write-disable); 0 without OSPKE. The
    #: kernel has one per thread; the model's tasks are single-threaded processes.
    pkru: int

    # --- files --------------------------------------------------------------------------

    def _alloc_fd(self, f: filemap.File) -> int:
        fd = 3
        while fd in self.fds:
            fd += 1
        f.get()
        self.fds[fd] = f
        return fd

    def _file(self, fd: int) -> filemap.File:
        f = self.fds.get(fd)
        if f is None:
            raise kernel_error(errno.EBADF, f"fd {fd}")
        return f

    def _file_open_for(self, fd: int, write: bool, err: int = errno.EBADF) -> filemap.File:
        """The open file of ``fd`` (EBADF if none), which must be open for writing (or, with
        ``write`` false, reading): ``err`` if not, EBADF as in fs/read_write.c:vfs_write,
        vfs_read and fs/open.c:vfs_fallocate, EINVAL as in fs/open.c:do_sys_ftruncate."""
        f = self._file(fd)
        if not (f.writable if write else f.readable):
            raise kernel_error(err, f"not open for {'writing' if write else 'reading'}")
        return f

    @syscall
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """open(2) on the kernel's tmpfs."""
        return self._alloc_fd(self.kernel.ctx.fs.open(path, flags))

    @syscall
    def close(self, fd: int) -> None:
        """close(2). Models fs/open.c:SYSCALL_DEFINE1(close) → fs/file.c:file_close_fd."""
        f = self._file(fd)
        del self.fds[fd]
        f.put()

    @syscall
    def dup(self, fd: int) -> int:
        """dup(2): a second descriptor for the same open file.

        Models fs/file.c:SYSCALL_DEFINE1(dup)."""
        return self._alloc_fd(self._file(fd))

    @syscall
    def memfd_create(self, name: str, flags: int = 0) -> int:
        """memfd_create(2). Models mm/memfd.c (MFD_HUGETLB: vmalab.mm.hugetlb)."""
        if type(flags) is int and flags & uapi.MFD_HUGETLB:
            valid = (
                uapi.MFD_CLOEXEC
                | uapi.MFD_ALLOW_SEALING
                | uapi.MFD_NOEXEC_SEAL
                | uapi.MFD_EXEC
                | uapi.MFD_HUGETLB
                | hugetlb.MAP_HUGE_MASK << hugetlb.MAP_HUGE_SHIFT
            )
            if flags & ~valid or flags & uapi.MFD_EXEC and flags & uapi.MFD_NOEXEC_SEAL:
                raise kernel_error(errno.EINVAL, "memfd_create flags")
            if len(name.encode()) > filemap.MEMFD_NAME_MAX:
                raise kernel_error(errno.EINVAL, "name too long")
            k = self.kernel
            return self._alloc_fd(
                hugetlb.memfd_create_hugetlb(k.ctx.fs, hugetlb.pool_of(k.ctx), name, flags)
            )
        if type(flags) is int and flags & (hugetlb.MAP_HUGE_MASK << hugetlb.MAP_HUGE_SHIFT):
            raise kernel_error(errno.EINVAL, "size bits without MFD_HUGETLB")
        return self._alloc_fd(self.kernel.ctx.fs.memfd_create(name, flags))

    @syscall
    def ftruncate(self, fd: int, length: int) -> None:
        """ftruncate(2). Models fs/open.c:do_sys_ftruncate → shmem_setattr."""
        check_int(length)
        if length < 0:
            raise kernel_error(errno.EINVAL, "negative length")
        f = self._file_open_for(fd, write=True, err=errno.EINVAL)
        if length > filemap.MAX_LFS_FILESIZE:
            raise kernel_error(errno.EFBIG)
        filemap.check_seals_shrink(f.inode, length)
        if f.inode.kind == "hugetlb":
            hugetlb.hugetlbfs_setattr_size(hugetlb.pool_of(self.kernel.ctx), f.inode, length)
        f.inode.truncate(length)

    @syscall
    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2). Models fs/open.c:vfs_fallocate → mm/shmem.c:shmem_fallocate."""
        check_int(mode, offset, length)
        if offset < 0 or length <= 0:
            raise kernel_error(errno.EINVAL, "bad offset or length")
        if mode & ~(uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE):
            raise kernel_error(errno.EOPNOTSUPP, "fallocate mode")
        if mode & uapi.FALLOC_FL_PUNCH_HOLE and not mode & uapi.FALLOC_FL_KEEP_SIZE:
            raise kernel_error(errno.EOPNOTSUPP, "PUNCH_HOLE needs KEEP_SIZE")
        f = self._file_open_for(fd, write=True)
        if offset + length > filemap.MAX_LFS_FILESIZE:
            raise kernel_error(errno.EFBIG)
        inode = f.inode
        if inode.kind == "hugetlb":
            pool = hugetlb.pool_of(self.kernel.ctx)
            return hugetlb.hugetlbfs_fallocate(pool, inode, mode, offset, length)
        if mode & uapi.FALLOC_FL_PUNCH_HOLE:
            if inode.seals & (uapi.F_SEAL_WRITE | uapi.F_SEAL_FUTURE_WRITE):
                raise kernel_error(errno.EPERM, "sealed")
            inode.punch_hole(offset, length)
            return
        end = offset + length
        # shmem_fallocate() refuses growth past i_size under F_SEAL_GROW in every mode
        if end > inode.size and inode.seals & uapi.F_SEAL_GROW:
            raise kernel_error(errno.EPERM, "F_SEAL_GROW")
        inode.fallocate_pages(offset >> 12, (end + 4095) >> 12)
        if not mode & uapi.FALLOC_FL_KEEP_SIZE and end > inode.size:
            inode.size = end

    @syscall
    def add_seals(self, fd: int, seals: int) -> None:
        """fcntl(F_ADD_SEALS). Models mm/memfd.c:memfd_add_seals."""
        filemap.add_seals(self._file(fd), seals)

    @syscall
    def get_seals(self, fd: int) -> int:
        """fcntl(F_GET_SEALS). Models mm/memfd.c:memfd_fcntl (F_GET_SEALS)."""
        return self._file(fd).inode.seals

    @syscall
    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """pwrite(2) into the page cache (shared with every mapping of the file).

        Models mm/shmem.c:shmem_file_write_iter (seal checks of shmem_write_begin).
        """
        check_int(offset)
        if offset < 0:
            raise kernel_error(errno.EINVAL, "negative offset")
        f = self._file_open_for(fd, write=True)
        inode = f.inode
        if inode.kind in ("hugetlb", "devzero"):
            if inode.kind == "devzero":
                return len(data)  # write_zero(): the data goes nowhere
            raise kernel_error(errno.EINVAL, "hugetlbfs has no write_iter")
        if not data:
            return 0
        if inode.seals & (uapi.F_SEAL_WRITE | uapi.F_SEAL_FUTURE_WRITE):
            raise kernel_error(errno.EPERM, "F_SEAL_WRITE")
        if offset + len(data) > inode.size and inode.seals & uapi.F_SEAL_GROW:
            raise kernel_error(errno.EPERM, "F_SEAL_GROW")
        inode.write(bytes(data), offset)
        return len(data)

    @syscall
    def pread(self, fd: int, length: int, offset: int) -> bytes:
        """pread(2) from the page cache. Models mm/shmem.c:shmem_file_read_iter."""
        check_int(length, offset)
        if offset < 0 or length < 0:
            raise kernel_error(errno.EINVAL, "negative offset or length")
        f = self._file_open_for(fd, write=False)
        return f.inode.read(length, offset)
