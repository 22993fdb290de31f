"""Run locally or shard the rows: what the multiprocessing and mpi backends share.

Both split a batch's rows into contiguous shards that start on multiples of ``block`` (so every
shard's products see the reference's fixed row tiles and the results are those of one process),
and both compute batches of fewer than ``min_rows`` rows without sharding them (the transfer
would cost more than the work).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from .numpy import _check_block

__all__ = ["block_shards", "ShardedRows"]


def block_shards(n: int, block: int, parts: int, keep_empty: bool = True
                 ) -> List[Tuple[int, int]]:
    """Contiguous ``(start, end)`` row ranges of ``n`` rows over ``parts`` shards.

    Parameters
    ----------
    n : int
        Rows of the batch.
    block : int
        Every shard starts on a multiple of ``block`` rows; the first ``ceil(n / block) %
        parts`` shards get one block more.
    parts : int
        Shards (workers or ranks).
    keep_empty : bool, default=True
        Keep the trailing empty shards (one per rank, as MPI's ``Allgatherv`` wants) or drop
        them (a worker pool sends nothing to an idle worker).

    Returns
    -------
    list of (int, int)
        ``parts`` ranges (fewer without ``keep_empty``), in order, covering ``0..n``.
    """
    nblk = -(-n // block)
    per, extra = divmod(nblk, parts)
    out, s = [], 0
    for r in range(parts):
        cnt = per + (r < extra)
        if cnt == 0 and not keep_empty:
            break
        e = min(n, s + cnt * block)
        out.append((s, e))
        s = e
    return out


class ShardedRows:
    """Mixin of a row-sharding backend: :attr:`min_rows` and the local-or-shard decision."""

    #: batches with fewer rows run without sharding (default ``2 * block``)
    min_rows: int

    def _init_sharding(self, min_rows: Optional[int]) -> None:
        self.min_rows = 2 * self.block if min_rows is None else _check_block(min_rows)

    def _local(self, n: int) -> bool:
        """Whether a batch of ``n`` rows runs without sharding (fewer than ``min_rows``)."""
        return n < self.min_rows
