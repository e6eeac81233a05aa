"""Conversion between pandas DataFrames and typed column arrays.

`prepare` validates an input DataFrame against the schema and turns it into a
`Batch`: one typed numpy array and one NULL mask per stored column.  Nothing
here touches the database, so every `ApdbInputError` is raised before a write
starts.  `to_frame` builds output DataFrames with the explicit dtypes of
`apdb.schema.ColumnInfo.pandas_dtype`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from apdb import schema
from apdb.errors import (
    ColumnTypeError,
    DuplicateIdError,
    InvalidCoordinatesError,
    InvalidIdError,
    InvalidTimeError,
    MissingColumnsError,
    NullValueError,
    SuspiciousStringError,
    UnknownBandError,
)
from apdb.schema import ColumnInfo

__all__ = ["Batch", "prepare", "to_frame"]

# Marker of a column without NULLs (no mask is built for it).
_NO_NULLS = np.zeros(0, bool)

# Quotes, statement separators, comments, backslashes: never needed in the
# free-text columns of the APDB (designations, version strings).
_SQLISH = re.compile(r"['\";\\]|--|/\*|\*/|\x00")

_INT_RANGE = {
    "long": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
}

# Input ids that must be unique within one call.
UNIQUE_KEYS: dict[str, list[tuple[str, ...]]] = {
    "DiaObject": [("diaObjectId",)],
    "DiaSource": [("diaSourceId",)],
    "DiaForcedSource": [("diaForcedSourceId",), ("diaObjectId", "visit", "detector")],
    "SSSource": [("diaSourceId",)],
    "SSObject": [("ssObjectId",)],
}

# Identifier columns besides ``*Id``: negative values are refused.
_ID_LIKE = ("visit", "detector")

# Tables whose ``midpointMjdTai`` must lie near the visit time.
_MIDPOINT_TABLES = ("DiaSource", "DiaForcedSource")

ID_COLUMN = {
    "DiaObject": "diaObjectId",
    "DiaSource": "diaSourceId",
    "DiaForcedSource": "diaForcedSourceId",
    "SSSource": "diaSourceId",
    "SSObject": "ssObjectId",
}


@dataclass
class Batch:
    """Typed columns of one table, ready to write.

    Attributes
    ----------
    table : `str`
        Table name.
    n : `int`
        Number of rows.
    values : `dict` [`str`, `numpy.ndarray`]
        Column values (numeric dtypes of the schema; object arrays of `str`
        for strings).  Masked entries hold an arbitrary placeholder.
    nulls : `dict` [`str`, `numpy.ndarray`]
        Boolean NULL masks, only for columns that have NULLs.
    """

    table: str
    n: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    nulls: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Stored columns, in schema order."""
        return list(self.values)

    def null_mask(self, name: str) -> np.ndarray | None:
        """NULL mask of a column, `None` when it has no NULLs."""
        return self.nulls.get(name)

    def records(self) -> list[tuple]:
        """Rows as tuples of Python values with `None` for NULL (slow path)."""
        cols = []
        for name, arr in self.values.items():
            obj = arr.astype(object) if arr.dtype != object else arr.copy()
            mask = self.nulls.get(name)
            if mask is not None:
                obj[mask] = None
            cols.append(obj.tolist())
        return list(zip(*cols, strict=True)) if cols else [()] * self.n


def _convert(table: str, col: ColumnInfo, series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Convert one input column; return ``(values, null_mask)``."""
    dt = col.datatype
    got = str(series.dtype)
    if dt in ("char", "string", "text"):
        return _convert_strings(table, col, series)
    if series.dtype == object or isinstance(series.dtype, pd.StringDtype):
        non_null = series.dropna()
        if not all(isinstance(v, (int, float, bool, np.number, np.bool_)) for v in non_null):
            raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got)
        series = pd.to_numeric(series, errors="coerce")
    if isinstance(series.dtype, pd.CategoricalDtype) or series.dtype.kind not in "biuf":
        raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got)
    nulls = series.isna().to_numpy()
    if dt in ("double", "float"):
        if series.dtype.kind == "b":
            raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got)
        vals = series.to_numpy(dtype=np.float64, na_value=np.nan)
        nulls = np.isnan(vals)
        with np.errstate(over="ignore"):
            out = vals.astype(col.numpy_dtype)
        if out.dtype != vals.dtype:
            # A finite value beyond the column type's range would be stored as inf.
            overflow = np.isinf(out) & np.isfinite(vals)
            if overflow.any():
                first = vals[overflow][0]
                raise ColumnTypeError(
                    table, col.name, str(col.numpy_dtype), f"{got} (out of range: {first:g})"
                )
        return out, nulls
    if dt == "boolean":
        vals = series.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = nulls | (vals == 0) | (vals == 1)
        if not ok.all():
            raise ColumnTypeError(table, col.name, "bool", got)
        return np.where(nulls, 0, vals).astype(bool), nulls
    # integers
    if series.dtype.kind == "b":
        raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got)
    lo, hi = _INT_RANGE[dt]
    if series.dtype.kind == "f":
        vals = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = vals[~nulls]
        if np.any(finite != np.round(finite)):
            raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got + " (non-integer)")
        if finite.size and (finite.min() < lo or finite.max() > hi):
            raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got + " (out of range)")
        return np.where(nulls, 0, vals).astype(col.numpy_dtype), nulls
    vals = series.to_numpy(dtype=np.int64, na_value=0) if nulls.any() else series.to_numpy()
    if vals.dtype.kind == "u" and vals.size and vals.max() > hi:
        raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got + " (out of range)")
    vals = vals.astype(np.int64)
    if vals.size and (vals.min() < lo or vals.max() > hi):
        raise ColumnTypeError(table, col.name, str(col.numpy_dtype), got + " (out of range)")
    return vals.astype(col.numpy_dtype), nulls


def _convert_2d(col: ColumnInfo, block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Convert several plain numpy columns of one datatype at once (see `_convert`).

    ``block`` holds one column per row (a 2-D slice of a pandas block).
    Returns the converted rows and their NULL masks (`None`: no NULL
    anywhere), or `None` when any column needs the general path (strings,
    a type or range error to report): the caller then converts those columns
    one by one, which raises the error.
    """
    dt = col.datatype
    kind = block.dtype.kind
    if dt in ("char", "string", "text") or kind not in "biuf" or (kind == "b" and dt != "boolean"):
        return None
    nulls = None
    vals = block
    if kind == "f":
        vals = block.astype(np.float64, copy=False)
        isnan = np.isnan(vals)
        if isnan.any():
            nulls = isnan
    if dt in ("double", "float"):
        with np.errstate(over="ignore"):
            out = vals.astype(col.numpy_dtype, copy=False)
        if out.dtype != vals.dtype and (np.isinf(out) & np.isfinite(vals)).any():
            return None
        return out, nulls
    filled = vals if nulls is None else np.where(nulls, 0, vals)
    if dt == "boolean":
        if kind != "b" and not ((filled == 0) | (filled == 1)).all():
            return None
        return filled.astype(bool), nulls
    lo, hi = _INT_RANGE[dt]
    if filled.size and (filled.min() < lo or filled.max() > hi):
        return None
    if kind == "f" and (filled != np.round(filled)).any():
        return None
    return filled.astype(col.numpy_dtype), nulls


def _convert_blocks(
    df: pd.DataFrame, infos: dict[str, ColumnInfo]
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Convert the plain numpy columns of ``df`` that are in ``infos``, block by block.

    pandas keeps columns of one dtype as one 2-D block; each block's columns
    of one schema datatype are checked and converted with a few whole-array
    operations instead of a `pandas.Series` and a dozen calls per column.
    Returns ``{name: (values, null mask or None)}`` for the columns done;
    the others (strings, extension arrays, errors to report) are left to the
    per-column path.
    """
    blocks = getattr(getattr(df, "_mgr", None), "blocks", None)
    if blocks is None:  # pragma: no cover - pandas without the block manager
        return {}
    names = df.columns.tolist()
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for blk in blocks:
        values = blk.values
        if isinstance(values, _MASKED):
            _convert_masked(names, infos, blk, out)
            continue
        if not isinstance(values, np.ndarray) or values.ndim != 2:
            continue
        if values.dtype.kind not in "biuf":
            continue
        groups: dict[str, list[tuple[int, str]]] = {}
        for i, j in enumerate(blk.mgr_locs.as_array.tolist()):
            name = names[j]
            info = infos.get(name) if isinstance(name, str) else None
            if info is not None:
                groups.setdefault(info.datatype, []).append((i, name))
        for members in groups.values():
            rows = [i for i, _ in members]
            sub = values if rows == list(range(values.shape[0])) else values[rows]
            done = _convert_2d(infos[members[0][1]], sub)
            if done is None:
                continue
            conv, nulls = done
            has_null = nulls.any(axis=1) if nulls is not None else None
            for r, (_, name) in enumerate(members):
                mask = nulls[r] if has_null is not None and has_null[r] else None
                out[name] = conv[r], mask
    return out


# pandas' nullable numeric columns (Int64, Float64, boolean): values + NA mask.
_MASKED = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)


def _convert_masked(
    names: list,
    infos: dict[str, ColumnInfo],
    blk: object,
    out: dict[str, tuple[np.ndarray, np.ndarray | None]],
) -> None:
    """Convert one nullable numeric column from its values and NA mask (no `Series`)."""
    (j,) = blk.mgr_locs.as_array.tolist()
    name = names[j]
    info = infos.get(name) if isinstance(name, str) else None
    if info is None:
        return
    data = np.asarray(blk.values._data)
    mask = np.asarray(blk.values._mask, dtype=bool)
    filled = np.where(mask, data.dtype.type(0), data) if mask.any() else data
    done = _convert_2d(info, filled[None, :])
    if done is None:
        return  # the per-column path reports the error
    conv, nulls = done
    nan = nulls[0] if nulls is not None else None
    both = mask if nan is None else (mask | nan)
    out[name] = conv[0], (both if both.any() else None)


@functools.lru_cache(maxsize=32)
def _table_plan(
    table: str,
) -> tuple[tuple[ColumnInfo, ...], dict[str, ColumnInfo], tuple[str, ...]]:
    """Return the stored (not computed) columns of ``table``, by name, and the required ones."""
    computed = set(schema.COMPUTED_COLUMNS.get(table, ()))
    infos = tuple(c for c in schema.table_columns(table) if c.name not in computed)
    return infos, {c.name: c for c in infos}, tuple(schema.required_columns(table))


def _convert_strings(
    table: str, col: ColumnInfo, series: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    nulls = series.isna().to_numpy()
    vals = series.to_numpy(dtype=object, na_value=None)
    present = vals[~nulls].tolist()
    if not all(issubclass(t, str) for t in set(map(type, present))):
        raise ColumnTypeError(table, col.name, "str", str(series.dtype))
    # Bands are checked later (UnknownBandError).
    limit = col.length if col.name != "band" else None
    if limit is not None and max(map(len, present), default=0) > limit:
        too_long = [v for v in present if len(v) > col.length]
        if too_long:
            raise ColumnTypeError(
                table, col.name, f"str of at most {col.length} characters", repr(too_long[0])
            )
    out = vals.copy()
    out[nulls] = ""
    return out, nulls


def prepare(
    table: str,
    df: pd.DataFrame | None,
    *,
    visit_mjd: float,
    now_mjd: float,
    bands: tuple[str, ...] = schema.BANDS,
    sql_strings: str = "reject",
    index_order: int = 29,
    max_midpoint_offset_days: float | None = None,
) -> Batch:
    """Validate an input DataFrame and convert it to a `Batch`.

    Parameters
    ----------
    table : `str`
        Target table.
    df : `pandas.DataFrame` or `None`
        Input rows; columns not in the schema are ignored.
    visit_mjd, now_mjd : `float`
        MJD TAI of the visit and of now, for defaulted time columns.
    bands : `tuple` [`str`]
        Allowed ``band`` values.
    sql_strings : {"reject", "allow"}
        Whether SQL-looking free-text values raise `SuspiciousStringError`.
    index_order : `int`
        HEALPix order of ``pixelId``.
    max_midpoint_offset_days : `float`, optional
        Largest allowed ``|midpointMjdTai - visit_mjd|`` of DiaSources and
        DiaForcedSources, in days (`None`: no limit).

    Raises
    ------
    ApdbInputError
        Any problem with the input.
    """
    from apdb.sky import pixel_index

    if df is None:
        return Batch(table=table, n=0)
    if not isinstance(df, pd.DataFrame):
        raise ColumnTypeError(table, "<frame>", "pandas.DataFrame", type(df).__name__)
    n = len(df)
    batch = Batch(table=table, n=n)
    if n == 0:
        return batch
    present = set(df.columns)
    if len(present) != len(df.columns):
        dup = df.columns[df.columns.duplicated()].tolist()
        raise DuplicateIdError(table, "column name", dup)
    infos, by_name, required = _table_plan(table)
    missing = [c for c in required if c not in present]
    if missing:
        raise MissingColumnsError(table, missing)
    defaults = schema.store_defaults(table)
    fast = _convert_blocks(df, by_name)
    for col in infos:
        if col.name in fast:
            vals, mask = fast[col.name]
            nulls = mask if mask is not None else _NO_NULLS
        elif col.name in present:
            vals, nulls = _convert(table, col, df[col.name])
        elif col.name in defaults:
            value = defaults[col.name]
            value = visit_mjd if value == "visit_time" else now_mjd if value == "now" else value
            vals, nulls = np.full(n, value, dtype=col.numpy_dtype), _NO_NULLS
        else:
            continue
        if nulls is not _NO_NULLS and nulls.any():
            if not col.nullable:
                if col.name in defaults:
                    fill = defaults[col.name]
                    fill = visit_mjd if fill == "visit_time" else now_mjd if fill == "now" else fill
                    vals = vals.copy()
                    vals[nulls] = fill
                elif col.name not in ("ra", "dec"):  # NaN coordinates: see below
                    raise NullValueError(table, col.name, int(nulls.sum()))
            else:
                batch.nulls[col.name] = nulls
        batch.values[col.name] = vals
    if table == "DiaObject":
        batch.values["validityStartMjdTai"] = np.full(n, visit_mjd, dtype=np.float64)
    _check_strings(batch, bands, sql_strings)
    _check_ids(batch)
    _check_unique(batch)
    if max_midpoint_offset_days is not None:
        _check_midpoints(batch, visit_mjd, max_midpoint_offset_days)
    if "ra" in batch.values:
        _check_coordinates(batch)
        batch.values["pixelId"] = pixel_index(batch.values["ra"], batch.values["dec"], index_order)
    return batch


def _check_strings(batch: Batch, bands: tuple[str, ...], sql_strings: str) -> None:
    for name, vals in batch.values.items():
        if vals.dtype != object:
            continue
        nulls = batch.nulls.get(name)
        present = vals if nulls is None else vals[~nulls]
        distinct = set(present.tolist())  # each value checked once
        if name == "band":
            bad = sorted(distinct.difference(bands))
            if bad:
                raise UnknownBandError(batch.table, bad, bands)
        elif sql_strings == "reject" and any(_SQLISH.search(v) for v in distinct):
            bad = [v for v in present if _SQLISH.search(v)]
            raise SuspiciousStringError(batch.table, name, bad)


def _check_ids(batch: Batch) -> None:
    """Refuse negative identifiers (``*Id`` columns, ``visit``, ``detector``)."""
    for name, vals in batch.values.items():
        if not (name.endswith("Id") or name in _ID_LIKE) or vals.dtype.kind not in "iu":
            continue
        bad = vals < 0
        nulls = batch.nulls.get(name)
        if nulls is not None:
            bad &= ~nulls
        if bad.any():
            raise InvalidIdError(batch.table, name, vals[bad].tolist())


def _check_midpoints(batch: Batch, visit_mjd: float, limit: float) -> None:
    """Refuse ``midpointMjdTai`` values further than ``limit`` days from the visit."""
    if batch.table not in _MIDPOINT_TABLES or "midpointMjdTai" not in batch.values:
        return
    offset = np.abs(batch.values["midpointMjdTai"] - visit_mjd)
    bad = offset > limit
    if bad.any():
        id_col = ID_COLUMN[batch.table]
        ids = batch.values[id_col][bad].tolist() if id_col in batch.values else []
        raise InvalidTimeError(
            batch.table,
            f"midpointMjdTai up to {offset[bad].max():.6g} day(s) from the visit time "
            f"{visit_mjd:.6f} (limit {limit:g} day(s), max_midpoint_offset_days) "
            f"for {id_col} {ids[:10]}" + (f" ... ({len(ids)} in all)" if len(ids) > 10 else ""),
        )


def _check_unique(batch: Batch) -> None:
    for key in UNIQUE_KEYS.get(batch.table, []):
        if not all(k in batch.values for k in key):
            continue
        if _all_distinct([batch.values[k] for k in key]):
            continue
        frame = pd.DataFrame({k: batch.values[k] for k in key})
        dup = frame.duplicated(keep=False)
        if dup.any():
            rows = frame[dup].drop_duplicates()
            ids = rows.iloc[:, 0].tolist() if len(key) == 1 else list(rows.itertuples(False))
            raise DuplicateIdError(batch.table, "/".join(key), ids)


def _all_distinct(columns: list[np.ndarray]) -> bool:
    """Whether the rows of integer ``columns`` are pairwise distinct (numpy only)."""
    if any(c.dtype.kind not in "iu" for c in columns):
        return False  # let the general check decide
    if len(columns) == 1:
        vals = np.sort(columns[0])
        return not np.any(vals[1:] == vals[:-1])
    order = np.lexsort(columns[::-1])
    rows = np.stack([c[order] for c in columns], axis=1)
    return not np.any(np.all(rows[1:] == rows[:-1], axis=1))


def _check_coordinates(batch: Batch) -> None:
    ra, dec = batch.values["ra"], batch.values["dec"]
    id_col = ID_COLUMN[batch.table]
    ids = batch.values.get(id_col, np.arange(batch.n))
    bad_nan = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad_nan.any():
        raise InvalidCoordinatesError(batch.table, id_col, ids[bad_nan].tolist(), "NaN ra/dec")
    bad = (ra < 0) | (ra >= 360) | (dec < -90) | (dec > 90)
    if bad.any():
        raise InvalidCoordinatesError(
            batch.table,
            id_col,
            ids[bad].tolist(),
            "ra/dec outside ra in [0, 360), dec in [-90, 90]",
        )


def to_frame(table: str, columns: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> pd.DataFrame:
    """Build an output DataFrame with the schema's pandas dtypes.

    Parameters
    ----------
    table : `str`
        Table name.
    columns : `dict` [`str`, `tuple`]
        ``{name: (values, null_mask or None)}`` in output order.
    """
    arrays: list = []
    n = None
    for name, (vals, nulls) in columns.items():
        col = schema.column_info(table, name)
        dtype = col.pandas_dtype
        if col.datatype in ("double", "float"):
            arr = np.asarray(vals, dtype=col.numpy_dtype)
            if nulls is not None and nulls.any():
                arr = arr.copy()
                arr[nulls] = np.nan
        elif dtype in ("Int64", "Int32", "Int16", "boolean"):
            base = np.asarray(vals, dtype=col.numpy_dtype)
            mask = nulls if nulls is not None else np.zeros(len(base), bool)
            cls = pd.arrays.BooleanArray if dtype == "boolean" else pd.arrays.IntegerArray
            arr = cls(base, mask)
        elif dtype == "object":
            arr = np.asarray(vals, dtype=object)
            if nulls is not None and nulls.any():
                arr = arr.copy()
                arr[nulls] = None
        else:
            arr = np.asarray(vals, dtype=col.numpy_dtype)
        if arr.ndim != 1 or (n is not None and len(arr) != n):
            raise ValueError(f"{table}.{name}: column of shape {arr.shape}, expected ({n},)")
        n = len(arr)
        arrays.append(arr)
    return _frame_from_arrays(list(columns), arrays, n or 0)


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """Return the (immutable) column index of a read's frame, built once per column list."""
    return pd.Index(names)


def _frame_from_arrays(names: list[str], arrays: list, n: int) -> pd.DataFrame:
    """Return a DataFrame of ready 1-d columns (numpy or pandas extension arrays).

    ``DataFrame._from_arrays`` without integrity checks builds the blocks
    directly: the public constructor sanitizes every column again (a third
    of a detector-sized read's client CPU).  Object columns stay ``object``
    (no string inference).  Falls back to the public constructor when the
    private one is missing.
    """
    build = getattr(pd.DataFrame, "_from_arrays", None)
    if build is not None:
        try:
            return build(
                arrays,
                columns=_column_index(tuple(names)),
                index=pd.RangeIndex(n),
                verify_integrity=False,
            )
        except TypeError:  # a changed private signature
            pass
    data = {
        name: pd.Series(arr, dtype=object, copy=False) if arr.dtype == object else arr
        for name, arr in zip(names, arrays, strict=True)
    }
    return pd.DataFrame(data, copy=False)
