"""PostgreSQL binary COPY to and from numpy, without per-row Python.

Both directions go through numpy structured arrays of fixed-width rows:

- writing (`encode_rows`): every row is laid out at full width (each string
  at the batch's widest), then one boolean byte mask drops what a row does
  not send: the value of a NULL field (only its length, -1, is sent) and the
  padding after a shorter string;
- reading (`decode_rows`): the SELECT wraps nullable columns in ``COALESCE``
  and adds ``IS NULL`` flags (`ReadField`), so the server never sends NULLs.

The format is PostgreSQL's documented binary COPY format: an 11-byte
signature, a 32-bit flags word, a 32-bit header-extension length, then per
row a 16-bit field count and per field a 32-bit length and the value in
network byte order; a 16-bit -1 ends the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from apdb.errors import ApdbDatabaseError

__all__ = [
    "PG_TYPES",
    "ReadField",
    "WriteField",
    "decode_rows",
    "encode_pieces",
    "encode_rows",
]

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
    """UTF-8 bytes of ``values`` as an ``S`` array, plus each value's byte length."""
    n = len(values)
    if n == 0:
        return WriteField(np.zeros(0, "S1"), "S", np.zeros(0, np.int64))
    try:
        # numpy converts in C; its ``U`` strings drop trailing NULs, which the
        # character counts below detect (PostgreSQL text holds no NUL anyway).
        text = np.asarray(values, dtype=str)
    except (TypeError, ValueError):  # pragma: no cover - prepare() gives str only
        text = None
    if text is not None and text.dtype.itemsize:
        codes = text.view(np.uint32).reshape(n, -1)
        lengths = np.count_nonzero(codes, axis=1)
        if codes.max(initial=0) < 0x80 and np.array_equal(lengths, _char_counts(values)):
            # All ASCII: one byte per character, NUL-padded like an ``S`` array.
            width = max(1, codes.shape[1])
            raw = np.zeros((n, width), np.uint8)
            raw[:, : codes.shape[1]] = codes
            return WriteField(raw.view(f"S{width}").ravel(), "S", lengths.astype(np.int64))
    encoded = [v.encode("utf-8") for v in values]
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    width = max(1, int(lengths.max(initial=1)))
    return WriteField(np.array(encoded, dtype=f"S{width}"), "S", lengths)


def _char_counts(values: np.ndarray) -> np.ndarray:
    """Return the number of characters of each string (Python's ``len``)."""
    return np.fromiter(map(len, values), dtype=np.int64, count=len(values))


def make_field(values: np.ndarray, datatype: str) -> WriteField:
    """Build a `WriteField` for values of a Felis datatype."""
    if datatype in ("char", "string", "text"):
        return _string_field(values)
    return WriteField(values, PG_TYPES[datatype][0])


def encode_rows(fields: list[WriteField], n: int, nulls: list[np.ndarray | None]) -> bytes:
    """Encode ``n`` rows as a binary COPY stream, NULLs included.

    Every row is first written at full width into one numpy structured array
    (each field its length word and its widest value); the bytes that a row
    does not send (the value of a NULL field, whose length word is -1, and the
    padding after a shorter string) are then dropped with one boolean mask
    over the whole buffer.  The stream keeps the input row order.

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
    return b"".join(encode_pieces(fields, n, nulls, max(n, 1)))


def encode_pieces(
    fields: list[WriteField], n: int, nulls: list[np.ndarray | None], rows_per_piece: int
) -> Iterator[bytes | memoryview]:
    """Yield the stream of `encode_rows` in pieces of ``rows_per_piece`` rows.

    A piece is encoded only when asked for, so a writer that sends each piece
    before asking for the next lets the server insert the rows already sent
    while the client encodes the next ones.  The first piece is the header,
    the last the trailer.
    """
    yield HEADER
    step = max(1, int(rows_per_piece))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        yield _encode_slice(fields, nulls, lo, hi)
    yield TRAILER


def _encode_slice(
    fields: list[WriteField], nulls: list[np.ndarray | None], lo: int, hi: int
) -> memoryview:
    """Encode rows ``lo:hi`` (no header or trailer)."""
    n = hi - lo
    layout: list[tuple[str, str]] = [("count", ">i2")]
    for k, f in enumerate(fields):
        layout.append((f"l{k}", ">i4"))
        layout.append((f"v{k}", f.values.dtype.str if f.lengths is not None else f.wire))
    dtype = np.dtype(layout)
    out = np.empty(n, dtype=dtype)
    out["count"] = len(fields)
    cut: list[tuple[int, int, np.ndarray]] = []  # (value offset, width, bytes kept per row)
    for k, f in enumerate(fields):
        mask = nulls[k][lo:hi] if k < len(nulls) and nulls[k] is not None else None
        if mask is not None and not mask.any():
            mask = None
        width = dtype.fields[f"v{k}"][0].itemsize
        out[f"v{k}"] = f.values[lo:hi]
        if f.lengths is None:
            if mask is None:
                out[f"l{k}"] = width
                continue
            out[f"l{k}"] = np.where(mask, -1, width)
            kept = np.where(mask, 0, width)
        else:
            sizes = f.lengths[lo:hi]
            lengths = sizes if mask is None else np.where(mask, -1, sizes)
            out[f"l{k}"] = lengths
            if mask is None and (n == 0 or bool((sizes == width).all())):
                continue
            kept = np.maximum(lengths, 0)
        cut.append((dtype.fields[f"v{k}"][1], width, kept))
    if not cut:
        return memoryview(out).cast("B")
    raw = out.view(np.uint8).reshape(n, dtype.itemsize)
    keep = np.ones((n, dtype.itemsize), dtype=bool)
    for offset, width, kept in cut:
        keep[:, offset : offset + width] = np.arange(width) < kept[:, None]
    return memoryview(raw[keep])


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
