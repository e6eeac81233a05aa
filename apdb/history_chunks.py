"""History chunks: the DiaSource and DiaForcedSource rows kept a second time, by visit.

A history read (the sources of a region's objects over 12 months) selects a
few rows of every past visit of the field, scattered over the row tables: its
cost grows with the depth of the history.  A *history chunk* holds the rows
of one table that one visit-detector wrote in one HEALPix cell (order
`CELL_ORDER`, ≈14′) as one Arrow IPC stream.  A read fetches the chunks of its
cells and time window, a few large values instead of thousands of rows, and
filters them with numpy (`decode`); when the chunks are small
(`MIN_ROWS_PER_CHUNK`) it reads the rows instead.

The row tables stay the truth that analysts, the replicator and the daytime
operations use.  Chunks are written in the store's transaction
(`apdb.sql.history`), and every update operation that changes rows of these
tables (reassign, withdraw) copies the changed columns into their chunks
(`patch`) in its own transaction: a chunk is always the rows of its key as
the tables hold them.

This module holds the format (no SQL): grouping a batch into chunks,
encoding, patching, and decoding with the read's filters.  The table is
`apdb.schema.CHUNK_TABLE` (revision 0008).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from apdb import schema
from apdb.schema import CHUNK_TABLE, HISTORY_TABLES
from apdb.sky import Region

__all__ = [
    "CELL_ORDER",
    "CHUNK_TABLE",
    "HISTORY_TABLES",
    "MIN_ROWS_PER_CHUNK",
    "Columns",
    "ChunkRow",
    "HistoryFilter",
    "arrow_schema",
    "cell_range",
    "cells_of",
    "decode",
    "encode",
    "make_chunks",
    "patch",
    "record_batch",
    "region_cells",
]

CELL_ORDER = 8
"""HEALPix order of a chunk's cell (≈0.05 deg², about one LSST detector)."""


MIN_ROWS_PER_CHUNK = 100
"""Fewest rows per chunk, on average, for a history read to use the chunks.

Decoding a chunk costs about 60-80 µs of client CPU whatever its size (an
Arrow record batch of ~100 columns), reading a row from the row tables about
5 µs.  Chunks are small where many detector-visits each wrote a few rows
into a cell (a detector-sized read then meets ~200 chunks of ~10 rows); such
a read goes to the row tables (`apdb.sql.history.read_chunks`)."""

Columns = dict[str, tuple[np.ndarray, np.ndarray | None]]
"""``{name: (values, NULL mask or None)}`` in schema order (as `apdb.sql.read_plan`)."""

_ARROW_TYPES = {
    "long": pa.int64(),
    "int": pa.int32(),
    "short": pa.int16(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "char": pa.string(),
    "string": pa.string(),
    "text": pa.string(),
}


# -- cells ---------------------------------------------------------------------------
def _shift(index_order: int) -> int:
    return 2 * (index_order - CELL_ORDER)


def cells_of(pixel_ids: np.ndarray, index_order: int) -> np.ndarray:
    """Cell (HEALPix NESTED, `CELL_ORDER`) of each order-``index_order`` pixel."""
    return np.asarray(pixel_ids, dtype=np.int64) >> _shift(index_order)


def cell_range(cell: int, index_order: int) -> tuple[int, int]:
    """First and last ``index_order`` pixel of a cell."""
    s = _shift(index_order)
    return int(cell) << s, ((int(cell) + 1) << s) - 1


def region_cells(ranges: np.ndarray, index_order: int) -> np.ndarray:
    """Cells that hold any pixel of the ``[lo, hi]`` cover ranges of a region."""
    bounds = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    if len(bounds) == 0:
        return np.zeros(0, np.int64)
    lo, hi = cells_of(bounds[:, 0], index_order), cells_of(bounds[:, 1], index_order)
    return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]))


# -- encoding --------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def arrow_schema(table: str) -> pa.Schema:
    """Arrow schema of a table's chunks (every column, schema order)."""
    return pa.schema(
        [
            pa.field(c.name, _ARROW_TYPES[c.datatype], nullable=c.nullable)
            for c in schema.table_columns(table)
        ]
    )


def _arrow_column(info: schema.ColumnInfo, n: int, column: tuple | None) -> pa.Array:
    kind = _ARROW_TYPES[info.datatype]
    if column is None:  # not given: NULL
        return pa.nulls(n, kind)
    vals, nulls = column
    if nulls is not None and not nulls.any():
        nulls = None
    if info.datatype in ("double", "float"):  # NULL is NaN (as every read returns it)
        vals = np.asarray(vals, dtype=info.numpy_dtype)
        if nulls is not None:
            vals = np.where(nulls, np.nan, vals).astype(info.numpy_dtype)
        return pa.array(vals, type=kind)
    if kind == pa.string():
        vals = np.asarray(vals, dtype=object)
        if nulls is not None:
            vals = vals.copy()
            vals[nulls] = None
        return pa.array(vals, type=kind)
    return pa.array(np.asarray(vals, dtype=info.numpy_dtype), type=kind, mask=nulls)


def record_batch(table: str, columns: Columns) -> pa.RecordBatch:
    """Every schema column of ``table`` as one Arrow record batch (missing columns NULL)."""
    n = len(next(iter(columns.values()))[0])
    arrays = [_arrow_column(i, n, columns.get(i.name)) for i in schema.table_columns(table)]
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(table))


def encode(table: str, columns: Columns) -> bytes:
    """One Arrow IPC stream of ``columns`` (missing columns NULL)."""
    return _serialize(record_batch(table, columns))


def _serialize(data: pa.RecordBatch | pa.Table) -> bytes:
    """One Arrow IPC stream of a record batch or table."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class ChunkRow:
    """One chunk: its key, time span, row count and encoded rows."""

    partitionId: int  # noqa: N815 - column names
    cellId: int  # noqa: N815
    visit: int
    detector: int
    midpointMinMjdTai: float  # noqa: N815
    midpointMaxMjdTai: float  # noqa: N815
    nRows: int  # noqa: N815
    data: bytes

    def row(self, table: str) -> dict[str, object]:
        """Return the chunk as a row of `CHUNK_TABLE`."""
        return {"tableName": table, **self.__dict__}


def make_chunks(table: str, columns: Columns, index_order: int) -> list[ChunkRow]:
    """Group rows by (partition, cell, visit, detector) and encode each group."""
    pixel = columns["pixelId"][0]
    n = len(pixel)
    if n == 0:
        return []
    part = np.asarray(columns["partitionId"][0], dtype=np.int64)
    cell = cells_of(pixel, index_order)
    visit = np.asarray(columns["visit"][0], dtype=np.int64)
    det = np.asarray(columns["detector"][0], dtype=np.int64)
    order = np.lexsort((det, visit, cell, part))
    keys = np.stack([part, cell, visit, det], axis=1)[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(keys, axis=0) != 0).any(axis=1)])
    bounds = np.r_[starts, n]
    mid = np.asarray(columns["midpointMjdTai"][0], dtype=np.float64)
    # One Arrow batch of the whole store; each chunk is a `take` of its rows.
    whole = record_batch(table, columns)
    out = []
    for g, start in enumerate(starts.tolist()):
        rows = order[start : bounds[g + 1]]
        chunk = whole if len(rows) == n else whole.take(pa.array(rows))
        out.append(
            ChunkRow(
                *keys[start].tolist(),
                midpointMinMjdTai=float(mid[rows].min()),
                midpointMaxMjdTai=float(mid[rows].max()),
                nRows=len(rows),
                data=_serialize(chunk),
            )
        )
    return out


# -- decoding --------------------------------------------------------------------------
@dataclass(frozen=True)
class HistoryFilter:
    """The row filters of a history read, applied to decoded chunks.

    The same conditions as the row read's ``WHERE`` clause and exact region
    test (`apdb.sql.apdb_sql.ApdbSql.get_dia_sources`).
    """

    start: float
    end: float
    include_withdrawn: bool
    object_ids: np.ndarray | None
    ranges: np.ndarray
    region: Region


def _table(blob: bytes, target: pa.Schema) -> pa.Table:
    got = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    if got.schema.equals(target):
        return got
    # Written under another schema revision: by name, missing columns NULL.
    n = got.num_rows
    names = set(got.schema.names)
    arrays = [
        got.column(f.name).cast(f.type) if f.name in names else pa.nulls(n, f.type) for f in target
    ]
    return pa.Table.from_arrays(arrays, schema=target)


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy()


def _keep(t: pa.Table, flt: HistoryFilter) -> np.ndarray:
    mid = _numpy(t.column("midpointMjdTai"))
    keep = (mid >= flt.start) & (mid < flt.end)
    if not flt.include_withdrawn:
        keep &= np.isnan(_numpy(t.column("timeWithdrawnMjdTai")))
    if flt.object_ids is not None:
        ids = t.column("diaObjectId")
        vals = _numpy(pc.fill_null(ids, 0)) if ids.null_count else _numpy(ids)
        hit = np.isin(vals, flt.object_ids)
        if ids.null_count:
            hit &= ~_numpy(ids.is_null())
        keep &= hit
    pix = _numpy(t.column("pixelId"))
    bounds = np.asarray(flt.ranges, dtype=np.int64).reshape(-1, 2)
    # inside some [lo, hi]: the last range starting at or before the pixel ends after it
    k = np.searchsorted(bounds[:, 0], pix, side="right") - 1
    keep &= (k >= 0) & (pix <= bounds[np.maximum(k, 0), 1])
    if keep.any():
        idx = np.flatnonzero(keep)
        ra = _numpy(t.column("ra"))[idx]
        dec = _numpy(t.column("dec"))[idx]
        keep[idx] = flt.region.contains(ra, dec)
    return keep


def decode(table: str, blobs: Sequence[bytes], flt: HistoryFilter) -> Columns:
    """Rows of the chunks ``blobs`` that pass ``flt``, as columns in schema order."""
    infos = schema.table_columns(table)
    target = arrow_schema(table)
    parts = [_table(b, target) for b in blobs]
    # One chunk per column: Arrow kernels (the filter below) cost per array chunk.
    whole = pa.concat_tables(parts).combine_chunks() if parts else target.empty_table()
    if len(whole) and not (flt.ranges is not None and len(flt.ranges)):
        whole = whole.slice(0, 0)
    if len(whole):
        keep = _keep(whole, flt)
        if not keep.all():
            whole = whole.filter(pa.array(keep))
    return _columns(whole, infos)


def _columns(whole: pa.Table, infos: list[schema.ColumnInfo]) -> Columns:
    """Arrow columns as numpy ``(values, NULL mask)`` pairs, in schema order."""
    out: Columns = {}
    for info in infos:
        col = whole.column(info.name)
        if info.datatype in ("double", "float"):
            vals = np.asarray(_numpy(col), dtype=info.numpy_dtype)
            nulls = np.isnan(vals)
        elif _ARROW_TYPES[info.datatype] == pa.string():
            vals = np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
            nulls = _numpy(col.is_null()) if col.null_count else None
        elif col.null_count:
            nulls = _numpy(col.is_null())
            fill = False if info.datatype == "boolean" else 0
            vals = np.asarray(_numpy(pc.fill_null(col, fill)), dtype=info.numpy_dtype)
        else:
            vals = np.asarray(_numpy(col), dtype=info.numpy_dtype)
            nulls = None
        out[info.name] = (vals, nulls if nulls is not None and nulls.any() else None)
    return out


def patch(table: str, blob: bytes, key: str, ids: np.ndarray, updates: Columns) -> bytes | None:
    """Return the chunk ``blob`` with new values of some columns for some rows.

    Parameters
    ----------
    table : `str`
        Table of the chunk.
    blob : `bytes`
        The encoded chunk.
    key : `str`
        Unique id column of the rows (``diaSourceId``, ``diaForcedSourceId``).
    ids : `numpy.ndarray`
        Ids of the rows to change.
    updates : `Columns`
        New ``(values, NULL mask)`` of the changed columns, aligned with ``ids``.

    Returns
    -------
    blob : `bytes` or `None`
        The new chunk; `None` when some id is not in the chunk.
    """
    target = arrow_schema(table)
    whole = _table(blob, target)
    have = whole.column(key).to_numpy()
    if len(have) == 0:
        return None
    order = np.argsort(have, kind="stable")
    pos = np.minimum(np.searchsorted(have, ids, sorter=order), len(have) - 1)
    rows = order[pos]
    if not np.array_equal(have[rows], ids):
        return None
    # Only the changed columns go through numpy; the others stay as they are.
    for name, (vals, nulls) in updates.items():
        info = schema.column_info(table, name)
        old_vals, old_nulls = _columns(whole.select([name]), [info])[name]
        new_vals = old_vals.copy()
        new_vals[rows] = vals
        new_nulls = np.zeros(len(new_vals), bool) if old_nulls is None else old_nulls.copy()
        new_nulls[rows] = False if nulls is None else nulls
        i = target.get_field_index(name)
        column = _arrow_column(info, len(new_vals), (new_vals, new_nulls))
        whole = whole.set_column(i, target.field(i), column)
    return _serialize(whole)
