"""PostgreSQL binary COPY to and from numpy, without per-row Python.

Both directions use rows in which every field has a fixed width, so that the
whole COPY stream is one numpy structured array:

- writing (`encode_rows`): rows are grouped by NULL pattern and by the byte
  length of each string value, so that within a group every row has the
  same layout: one structured array per group (a NULL field is only its
  length, -1);
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
        Values (numeric or bool, or UTF-8 bytes as an ``S`` array).
    wire : `str`
        numpy format on the wire (``>f8``, ``u1``; ``S`` for strings).
    lengths : `numpy.ndarray`, optional
        Byte length of each string value.
    """

    values: np.ndarray
    wire: str
    lengths: np.ndarray | None = None


def _string_field(values: np.ndarray) -> WriteField:
    encoded = [v.encode("utf-8") for v in values]
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    width = max(1, int(lengths.max(initial=1)))
    return WriteField(np.array(encoded, dtype=f"S{width}"), "S", lengths)


def make_field(values: np.ndarray, datatype: str) -> WriteField:
    """Build a `WriteField` for values of a Felis datatype."""
    if datatype in ("char", "string", "text"):
        return _string_field(values)
    return WriteField(values, PG_TYPES[datatype][0])


def encode_rows(fields: list[WriteField], n: int, nulls: list[np.ndarray | None]) -> bytes:
    """Encode ``n`` rows as a binary COPY stream, NULLs included.

    A NULL field is just the length -1, so rows with different NULL patterns
    have different layouts.  Rows are grouped by NULL pattern and each group is
    one numpy structured array; the stream holds the groups one after the
    other (row order does not matter to a table).

    Parameters
    ----------
    fields : `list` [`WriteField`]
        Fields in the order of the COPY column list.
    n : `int`
        Number of rows.
    nulls : `list` [`numpy.ndarray` or `None`]
        Boolean NULL mask of each field (`None`: no NULLs).

    Returns
    -------
    data : `bytes`
        Header, rows and trailer.
    """
    nullable = [k for k, m in enumerate(nulls) if m is not None and m.any()]
    strings = [k for k, f in enumerate(fields) if f.lengths is not None]
    if not nullable and not strings:
        return HEADER + _encode_group(fields, np.arange(n), set(), {}).tobytes() + TRAILER
    keys = [nulls[k].astype(np.int64) for k in nullable]
    keys += [fields[k].lengths for k in strings]
    patterns, inverse = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(patterns) + 1))
    parts = [HEADER]
    for g, pattern in enumerate(patterns):
        rows = order[bounds[g] : bounds[g + 1]]
        null_fields = {k for k, flag in zip(nullable, pattern, strict=False) if flag}
        widths = dict(zip(strings, pattern[len(nullable) :].tolist(), strict=True))
        parts.append(_encode_group(fields, rows, null_fields, widths).tobytes())
    parts.append(TRAILER)
    return b"".join(parts)


def _encode_group(
    fields: list[WriteField], rows: np.ndarray, null_fields: set[int], widths: dict[int, int]
) -> np.ndarray:
    """Encode rows sharing NULL fields ``null_fields`` and string ``widths``."""
    layout = [("count", ">i2")]
    sizes = {}
    for k, f in enumerate(fields):
        layout.append((f"l{k}", ">i4"))
        if k in null_fields:
            continue
        size = widths[k] if k in widths else np.dtype(f.wire).itemsize
        sizes[k] = size
        if size:
            layout.append((f"v{k}", f"S{size}" if k in widths else f.wire))
    out = np.empty(len(rows), dtype=np.dtype(layout))
    out["count"] = len(fields)
    everything = len(rows) == len(fields[0].values) if fields else True
    for k, f in enumerate(fields):
        if k in null_fields:
            out[f"l{k}"] = -1
            continue
        out[f"l{k}"] = sizes[k]
        if sizes[k]:
            out[f"v{k}"] = f.values if everything else f.values[rows]
    return out


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
