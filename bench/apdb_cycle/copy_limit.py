"""The physical limit of a store: raw binary COPY of the same rows.

`CopyLimit` owns a database with one plain table per APDB table (same
columns, types from the DataFrame dtypes, no primary key, no index, no
constraint) and loads a visit's frames into them with
``COPY ... FROM STDIN (FORMAT BINARY)``, the buffer built with numpy in one
vectorised pass per table.  Nothing can store the same rows on the same
server faster, so ``store rows/s ÷ COPY rows/s`` says how close a store gets
to the limit.

Encoding rules (the workload satisfies them): a float column that is all NaN
and a nullable integer column that is all NA are sent as NULLs; NaN inside
an otherwise filled float column is sent as the float NaN; a string column
must hold strings of one length (``band``, ``reliabilityVersion``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

_HEADER = b"PGCOPY\n\xff\r\n\x00" + np.array([0, 0], ">i4").tobytes()
_TRAILER = np.array([-1], ">i2").tobytes()

_PG_TYPE = {
    "float64": ("double precision", ">f8"),
    "float32": ("real", ">f4"),
    "int64": ("bigint", ">i8"),
    "Int64": ("bigint", ">i8"),
    "int32": ("integer", ">i4"),
    "int16": ("smallint", ">i2"),
    "bool": ("boolean", "?"),
}


def _column_kind(series: pd.Series) -> tuple[str, str]:
    dtype = str(series.dtype)
    if dtype in _PG_TYPE:
        return _PG_TYPE[dtype]
    return ("text", "S")


def encode_binary_copy(df: pd.DataFrame) -> bytes:
    """Encode a DataFrame as a PostgreSQL binary COPY stream.

    Parameters
    ----------
    df : `pandas.DataFrame`
        Columns of the dtypes in ``_PG_TYPE`` or fixed-length strings.

    Returns
    -------
    payload : `bytes`
        Header, one tuple per row, trailer.
    """
    n = len(df)
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    values: dict[str, np.ndarray] = {}
    lengths: dict[str, int] = {}
    for k, name in enumerate(df.columns):
        s = df[name]
        _, code = _column_kind(s)
        if code == "S":
            arr = np.asarray(s.to_numpy(dtype=object).astype(str), dtype="S")
            if n and len(set(np.char.str_len(arr).tolist())) > 1:
                raise ValueError(f"column {name!r}: strings of different lengths")
            code = arr.dtype.str
            width = arr.dtype.itemsize
        else:
            if str(s.dtype) == "Int64":
                if s.isna().all():
                    fields.append((f"l{k}", ">i4"))
                    lengths[f"l{k}"] = -1
                    continue
                if s.isna().any():
                    raise ValueError(f"column {name!r}: mixed NA integers are not supported")
                arr = s.to_numpy(dtype=np.int64)
            else:
                arr = s.to_numpy()
                if arr.dtype.kind == "f" and n and np.isnan(arr).all():
                    fields.append((f"l{k}", ">i4"))
                    lengths[f"l{k}"] = -1
                    continue
            width = np.dtype(code).itemsize
        fields.append((f"l{k}", ">i4"))
        fields.append((f"v{k}", code))
        lengths[f"l{k}"] = width
        values[f"v{k}"] = arr
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["nfields"] = len(df.columns)
    for key, length in lengths.items():
        rows[key] = length
    for key, arr in values.items():
        rows[key] = arr
    return _HEADER + rows.tobytes() + _TRAILER


class CopyLimit:
    """Plain tables on a database and a timed binary COPY into them.

    Parameters
    ----------
    dsn : `str`
        libpq connection string of an empty database.
    """

    def __init__(self, dsn: str):
        self.conn = psycopg.connect(dsn)
        self._created: set[str] = set()

    def _ensure_table(self, table: str, df: pd.DataFrame) -> None:
        if table in self._created:
            return
        cols = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(_column_kind(df[name])[0]))
            for name in df.columns
        ]
        query = sql.SQL("CREATE TABLE {} ({})").format(
            sql.Identifier(table), sql.SQL(", ").join(cols)
        )
        with self.conn.transaction():
            self.conn.execute(query)
        self._created.add(table)

    def copy(self, frames: dict[str, pd.DataFrame]) -> dict[str, float]:
        """COPY the frames (table name → rows) in one transaction.

        Returns
        -------
        timing : `dict` [`str`, `float`]
            ``rows``, ``encode_s`` (numpy encoding), ``copy_s`` (sending the
            streams and committing) and ``total_s``.
        """
        for table, df in frames.items():
            self._ensure_table(table, df)
        t0 = time.perf_counter()
        payloads = {table: encode_binary_copy(df) for table, df in frames.items()}
        t1 = time.perf_counter()
        with self.conn.transaction():
            for table, payload in payloads.items():
                cols = sql.SQL(", ").join(sql.Identifier(c) for c in frames[table].columns)
                stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(table), cols
                )
                with self.conn.cursor() as cur, cur.copy(stmt) as cp:
                    cp.write(payload)
        t2 = time.perf_counter()
        rows = sum(len(df) for df in frames.values())
        return {"rows": rows, "encode_s": t1 - t0, "copy_s": t2 - t1, "total_s": t2 - t0}

    def check_counts(self) -> dict[str, int]:
        """Row counts of the plain tables (a check that the COPY really loaded)."""
        out = {}
        for table in sorted(self._created):
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            out[table] = self.conn.execute(query).fetchone()[0]
        self.conn.commit()
        return out

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
