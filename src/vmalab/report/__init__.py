"""The design comparison: metrics of a Kernel, per-design runs, tables, plots and sweeps."""
