"""Replica chunks: what `Apdb.get_replica_chunks` and friends return.

The change stream of an APDB with ``replication.enabled`` (see
`apdb.replica_schema` for the tables and `apdb.sql.replica` for how they are
written).  A chunk is finished once its time bucket is over and every write
transaction that started in it has committed; the replicator
(`apdb.sql.ppdb`) only takes chunks older than a grace period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["CHUNKS_PER_TRANSACTION", "ReplicaChunk", "UpdateRecord"]

CHUNKS_PER_TRANSACTION = 8
"""Default number of chunks the replicator copies in one PPDB transaction."""


@dataclass(frozen=True)
class ReplicaChunk:
    """One replica chunk.

    Attributes
    ----------
    id : `int`
        Unix time (seconds) of the chunk's start (a multiple of ``seconds``).
    seconds : `int`
        Chunk length.
    created_time : `float`
        Unix time at which the first change was recorded in it.
    """

    id: int
    seconds: int
    created_time: float

    @property
    def end(self) -> float:
        """Unix time of the chunk's end."""
        return float(self.id + self.seconds)

    def is_finished(self, grace: float, now: float | None = None) -> bool:
        """Whether the chunk ended more than ``grace`` seconds before ``now``."""
        t = time.time() if now is None else now
        return self.end + grace <= t


@dataclass(frozen=True)
class UpdateRecord:
    """One update record: the values an update operation left in some rows.

    Attributes
    ----------
    chunk_id : `int`
        Its chunk.
    update_time_ns : `int`
        Wall-clock time of the record (ns since the Unix epoch).
    update_order : `int`
        Order among records of the same writer and time.
    unique_id : `str`
        Id of the writer.
    kind : `str`
        The operation: ``reassign_dia_sources_to_dia_objects``,
        ``n_dia_sources``, ``set_validity_end``, ``withdraw_dia_sources``,
        ``withdraw_dia_forced_sources``, ``reassign_dia_sources_to_ss_objects``.
    payload : `dict`
        ``{"table": name, "keys": [key columns], "columns": [columns],
        "rows": [[key values..., column values...], ...]}``.
    """

    chunk_id: int
    update_time_ns: int
    update_order: int
    unique_id: str
    kind: str
    payload: dict[str, Any]
