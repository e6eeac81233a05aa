"""Binary COPY encoding (`apdb.sql.pgcopy.encode_rows`) against a row-by-row encoder."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from apdb.sql.pgcopy import HEADER, TRAILER, encode_pieces, encode_rows, make_field

_STRUCT = {"long": ">q", "int": ">i", "short": ">h", "double": ">d", "float": ">f", "boolean": ">B"}


def _reference(columns: list[tuple[np.ndarray, str, np.ndarray | None]]) -> bytes:
    """Return the binary COPY stream written one value at a time with `struct`."""
    n = len(columns[0][0])
    out = [HEADER]
    for i in range(n):
        out.append(struct.pack(">h", len(columns)))
        for values, datatype, nulls in columns:
            if nulls is not None and nulls[i]:
                out.append(struct.pack(">i", -1))
            elif datatype == "text":
                data = values[i].encode("utf-8")
                out.append(struct.pack(">i", len(data)) + data)
            else:
                data = struct.pack(_STRUCT[datatype], values[i].item())
                out.append(struct.pack(">i", len(data)) + data)
    out.append(TRAILER)
    return b"".join(out)


def _encode(columns: list[tuple[np.ndarray, str, np.ndarray | None]]) -> bytes:
    fields = [make_field(v, t) for v, t, _ in columns]
    return encode_rows(fields, len(columns[0][0]), [m for _, _, m in columns])


def _columns(rng: np.random.Generator, n: int, null_fraction: float) -> list:
    def mask() -> np.ndarray:
        return rng.random(n) < null_fraction

    words = np.array(["", "g", "v1", "abc", "ZTF21aaaaaa", "x" * 40], dtype=object)
    unicode = np.array(["é", "ab", "星", "", "ok"], dtype=object)
    return [
        (rng.integers(-(2**62), 2**62, n), "long", None),
        (rng.integers(-(2**31), 2**31, n).astype(np.int32), "int", mask()),
        (rng.integers(-(2**15), 2**15, n).astype(np.int16), "short", mask()),
        (rng.normal(size=n), "double", mask()),
        (rng.normal(size=n).astype(np.float32), "float", None),
        (rng.random(n) < 0.5, "boolean", mask()),
        (words[rng.integers(0, len(words), n)], "text", mask()),
        (unicode[rng.integers(0, len(unicode), n)], "text", None),
        (np.full(n, "same"), "text", None),
    ]


@pytest.mark.parametrize("null_fraction", [0.0, 0.1, 0.7, 1.0])
def test_encode_rows_equals_row_by_row_encoding(null_fraction: float) -> None:
    rng = np.random.default_rng(7)
    columns = _columns(rng, 500, null_fraction)
    assert _encode(columns) == _reference(columns)


def test_encode_rows_without_nulls_or_strings() -> None:
    rng = np.random.default_rng(3)
    columns = [(rng.integers(0, 10, 20), "long", None), (rng.normal(size=20), "double", None)]
    assert _encode(columns) == _reference(columns)


def test_encode_rows_all_empty_strings_and_no_rows() -> None:
    columns = [(np.arange(3), "long", None), (np.array(["", "", ""], dtype=object), "text", None)]
    assert _encode(columns) == _reference(columns)
    empty = [(np.zeros(0, np.int64), "long", None), (np.zeros(0, object), "text", None)]
    assert _encode(empty) == HEADER + TRAILER


def test_string_with_trailing_nul_keeps_its_bytes() -> None:
    # numpy's str arrays drop trailing NULs: such values must take the exact path.
    columns = [(np.array(["a\x00", "bc"], dtype=object), "text", None)]
    assert _encode(columns) == _reference(columns)


@pytest.mark.parametrize("rows_per_piece", [1, 7, 499, 500, 10_000])
def test_encode_pieces_join_to_the_whole_stream(rows_per_piece: int) -> None:
    rng = np.random.default_rng(11)
    columns = _columns(rng, 500, 0.3)
    fields = [make_field(v, t) for v, t, _ in columns]
    pieces = list(encode_pieces(fields, 500, [m for _, _, m in columns], rows_per_piece))
    assert bytes(pieces[0]) == HEADER and bytes(pieces[-1]) == TRAILER
    assert len(pieces) == 2 + -(-500 // rows_per_piece)
    assert b"".join(pieces) == _reference(columns)
