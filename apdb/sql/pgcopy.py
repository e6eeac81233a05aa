"""PostgreSQL binary COPY to and from numpy, without per-row Python.

Both directions use rows in which every field has a fixed width, so that the
whole COPY stream is one numpy structured array:

- writing (`encode_rows`): NULLs are never sent; floats carry NaN (turned
  into NULL by the set-based INSERT that reads the staging table), other
  nullable columns get a separate boolean ``<name>__null`` flag, and strings
  are padded with spaces to the batch's widest value (trimmed again in SQL);
- reading (`decode_rows`): the SELECT wraps nullable columns in ``COALESCE``
  and adds ``IS NULL`` flags (`ReadField`), so the server never sends NULLs.

The format is PostgreSQL's documented binary COPY format: an 11-byte
signature, a 32-bit flags word, a 32-bit header-extension length, then per
row a 16-bit field count and per field a 32-bit length and the value in
network byte order; a 16-bit -1 ends the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apdb.errors import ApdbDatabaseError

__all__ = ["PG_TYPES", "ReadField", "WriteField", "decode_rows", "encode_rows"]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

# Felis datatype -> (big-endian numpy format of the wire value, PostgreSQL type).
PG_TYPES: dict[str, tuple[str, str]] = {
    "long": (">i8", "bigint"),
    "int": (">i4", "integer"),
    "short": (">i2", "smallint"),
    "double": (">f8", "double precision"),
    "float": (">f4", "real"),
    "boolean": ("u1", "boolean"),
}


@dataclass(frozen=True)
class WriteField:
    """One fixed-width field of a binary COPY row.

    Attributes
    ----------
    values : `numpy.ndarray`
        Values (numeric or bool), or an object array of `str`.
    wire : `str`
        numpy format on the wire (``>f8``, ``u1``, ``S12``...).
    """

    values: np.ndarray
    wire: str


def _string_field(values: np.ndarray) -> WriteField:
    encoded = np.array([v.encode("utf-8") for v in values], dtype=object)
    width = max(1, max((len(b) for b in encoded), default=1))
    padded = np.array([b.ljust(width, b" ") for b in encoded], dtype=f"S{width}")
    return WriteField(padded, f"S{width}")


def make_field(values: np.ndarray, datatype: str) -> WriteField:
    """Build a `WriteField` for values of a Felis datatype."""
    if datatype in ("char", "string", "text"):
        return _string_field(values)
    return WriteField(values, PG_TYPES[datatype][0])


def encode_rows(fields: list[WriteField], n: int) -> bytes:
    """Encode ``n`` rows of fixed-width fields as a binary COPY stream.

    Parameters
    ----------
    fields : `list` [`WriteField`]
        Fields in the order of the COPY column list.
    n : `int`
        Number of rows.

    Returns
    -------
    data : `bytes`
        Header, rows and trailer.
    """
    layout = [("count", ">i2")]
    for k, f in enumerate(fields):
        layout += [(f"l{k}", ">i4"), (f"v{k}", f.wire)]
    rows = np.empty(n, dtype=np.dtype(layout))
    rows["count"] = len(fields)
    for k, f in enumerate(fields):
        rows[f"l{k}"] = np.dtype(f.wire).itemsize
        rows[f"v{k}"] = f.values
    return HEADER + rows.tobytes() + TRAILER


@dataclass(frozen=True)
class ReadField:
    """One fixed-width field of a binary COPY row being read.

    Attributes
    ----------
    name : `str`
        Output name.
    wire : `str`
        numpy format on the wire.
    """

    name: str
    wire: str


def decode_rows(data: bytes, fields: list[ReadField]) -> dict[str, np.ndarray]:
    """Decode a binary COPY stream of fixed-width rows.

    Parameters
    ----------
    data : `bytes`
        The whole stream, header to trailer.
    fields : `list` [`ReadField`]
        The fields of each row, in SELECT order.

    Returns
    -------
    columns : `dict` [`str`, `numpy.ndarray`]
        Native-endian arrays (bytes fields as ``S`` arrays).
    """
    if not data.startswith(SIGNATURE):
        raise ApdbDatabaseError("not a PostgreSQL binary COPY stream")
    ext = int.from_bytes(data[15:19], "big")
    start = 19 + ext
    layout = [("count", ">i2")]
    for k, f in enumerate(fields):
        layout += [(f"l{k}", ">i4"), (f"v{k}", f.wire)]
    dtype = np.dtype(layout)
    body = len(data) - start - len(TRAILER)
    if body % dtype.itemsize or not data.endswith(TRAILER):
        raise ApdbDatabaseError("binary COPY stream does not have the expected row layout")
    n = body // dtype.itemsize
    rows = np.frombuffer(data, dtype=dtype, count=n, offset=start)
    out: dict[str, np.ndarray] = {}
    for k, f in enumerate(fields):
        size = np.dtype(f.wire).itemsize
        if n and np.any(rows[f"l{k}"] != size):
            raise ApdbDatabaseError(f"field {f.name!r} is not {size} bytes wide in every row")
        vals = rows[f"v{k}"]
        if vals.dtype.kind in "iuf":
            vals = vals.astype(vals.dtype.newbyteorder("="))
        elif vals.dtype.kind != "S":
            vals = vals.copy()
        out[f.name] = vals
    return out
