"""Traces and workloads run on the model (I/O outside the model).

Replay: ``replay`` (the driver, :func:`vmalab.trace.replay.replay`, and the dispatch table),
``replay_state`` (tasks, fd tables, model files, the result), ``handlers_mm``,
``handlers_fs``, ``handlers_task`` (one syscall family each), ``parse`` (strace lines),
``layout`` (exec images and maps dumps), ``verify``/``mapsdiff`` (model vs. real maps).
Recording: ``record`` (command line, manifest), ``tracer`` (ptrace), ``decode`` and
``strace_fmt`` (strace's syntax), ``snapshots`` (exec/exit/read snapshots), ``merge`` (perf
faults into the trace), ``recording`` (reading a recording back). Runs: ``workloads``,
``guardify`` (the PROT_NONE → MADV_GUARD_INSTALL what-if), ``run`` (one source under one
design, measured by :mod:`vmalab.report`), ``sweep`` (many, locally or on Dask), and the
``cli*`` commands. trace/ imports the core, report/ and cliutil, never the package face.
"""
