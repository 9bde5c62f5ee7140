"""The op classes, one module per family (memory, lock, process, files, ipc, huge); importing this
package registers them all in ``vmalab.program.base.OPS``."""

from vmalab.program.ops import files, huge, ipc, lock, memory, process

__all__ = ["files", "huge", "ipc", "lock", "memory", "process"]
