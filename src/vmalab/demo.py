"""``vmalab demo``: a small process, a few operations, its maps under each design."""

from __future__ import annotations

import click

from vmalab import DESIGNS, PAGE_SIZE, Kernel, uapi
from vmalab.designs import get_design


def run_demo(design: str) -> str:
    """Run the demo program under ``design`` and return its report text.

    The program maps a 16-page anonymous region and a 16-page memfd, installs guard
    pages in both (a glibc-style stack guard and a file guard), writes some data, splits
    the anonymous region with mprotect, then forks; the report shows the child's maps,
    the guard markers it inherited and the kernel objects allocated.
    """
    k = Kernel(design)
    p = k.spawn()
    rw = uapi.PROT_READ | uapi.PROT_WRITE
    a = p.mmap(0, 16 * PAGE_SIZE, rw, uapi.MAP_PRIVATE | uapi.MAP_ANONYMOUS)
    fd = p.memfd_create("demo")
    p.ftruncate(fd, 16 * PAGE_SIZE)
    f = p.mmap(0, 16 * PAGE_SIZE, rw, uapi.MAP_SHARED, fd, 0)
    p.madvise(a, PAGE_SIZE, uapi.MADV_GUARD_INSTALL)
    p.madvise(f + 8 * PAGE_SIZE, PAGE_SIZE, uapi.MADV_GUARD_INSTALL)
    p.write(f, b"file data")
    p.mprotect(a + 12 * PAGE_SIZE, 4 * PAGE_SIZE, uapi.PROT_READ)
    child = p.fork()
    lines = [f"== design {design}: {get_design(design).summary}", "child /proc/PID/maps:"]
    lines += ["  " + ln for ln in child.maps().splitlines()]
    for v in child.vmas():
        n = (v.end - v.start) // PAGE_SIZE
        pm = child.pagemap(v.start, n)
        guards = sum(1 for e in pm if e & uapi.PM_GUARD_REGION)
        lines.append(
            f"  {v.start:#x}-{v.end:#x} guards={guards} anon_vma={v.anon_vma} "
            f"flags={v.anon_vma_flags} VmFlags={' '.join(sorted(v.flags))}"
        )
    slab = k.slab()
    lines.append(
        "kernel objects: "
        + ", ".join(
            f"{n}={slab[n].active} ({slab[n].bytes} B)"
            for n in ("vm_area_struct", "anon_vma", "anon_vma_chain", "pgtable")
        )
    )
    k.check()
    return "\n".join(lines)


@click.command(
    help="""Print the maps of a small process after a few operations, under each
design: guard pages in an anonymous region and a memfd, an mprotect split, then fork.

\b
Examples:
  vmalab demo
  vmalab demo --design sticky --design tagged""",
    short_help="A small process's maps under each design.",
)
@click.option(
    "--design",
    "designs",
    multiple=True,
    type=click.Choice(list(DESIGNS)),
    help="Design(s) to run (default: all).",
)
def demo(designs: tuple[str, ...]) -> None:
    """Print the maps of a small process after a few operations, under each design."""
    for d in designs or DESIGNS:
        click.echo(run_demo(d))
        click.echo()
