"""Executors: where the runs of a suite train (in this process, or as SLURM job arrays)."""
