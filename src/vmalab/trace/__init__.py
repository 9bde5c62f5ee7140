"""strace replay, built-in workloads and the guardify what-if (I/O outside the model).

``vmalab.trace.replay.replay`` replays an strace log into a Kernel; ``workloads`` holds the
synthetic workloads; ``guardify`` rewrites PROT_NONE guard pages into MADV_GUARD_INSTALL.
"""
