"""The op classes, one module per family (memory, lock, process, files); importing this
package registers them all in ``vmalab.program.base.OPS``."""

from vmalab.program.ops import files, lock, memory, process

__all__ = ["files", "lock", "memory", "process"]
