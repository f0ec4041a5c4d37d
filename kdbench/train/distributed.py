"""Data-parallel training: :mod:`kdbench.distributed`, re-exported for the training code.

The helpers live one layer down so that methods (ARFD's :func:`from_rank0`, CIRKD's
:func:`gathered`) use them without importing :mod:`kdbench.train`.
"""

from kdbench.distributed import (
    SINGLE,
    TIMEOUT,
    Decision,
    Group,
    SyncBatchNorm,
    agreed_stop,
    backend_for,
    convert_sync_batchnorm,
    current,
    data_parallel,
    from_rank0,
    gathered,
    global_count,
    leader_decides,
    mean_over_ranks,
    process_group,
    shard,
    sum_over_ranks,
    unwrapped,
    writer_first,
)

__all__ = [
    "agreed_stop",
    "backend_for",
    "convert_sync_batchnorm",
    "current",
    "data_parallel",
    "Decision",
    "from_rank0",
    "gathered",
    "global_count",
    "Group",
    "leader_decides",
    "mean_over_ranks",
    "process_group",
    "shard",
    "SINGLE",
    "sum_over_ranks",
    "SyncBatchNorm",
    "TIMEOUT",
    "unwrapped",
    "writer_first",
]
