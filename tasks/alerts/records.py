"""Turn APDB DataFrames into Avro records of the alert schema.

The conversion is column-wise: each schema field becomes one Python list
(NaN/NA → ``None`` for nullable fields, numpy scalars → Python scalars),
then the lists are zipped into dictionaries.  Every record carries exactly
the schema's fields, so fastavro's strict writer can reject any record
whose keys differ from the schema (fastavro would otherwise silently drop
unknown keys).

Large integer ids (``diaObjectId`` and friends exceed 2**53) never pass
through float64: nullable integer columns are read through pandas' masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tasks.alerts.schema import AlertSchemaError, FieldSpec, RecordSpec

__all__ = ["frame_to_records", "unused_columns", "column_values"]

_FLOAT_TYPES = ("float", "double")
_INT_TYPES = ("int", "long")


def _null_mask(series: pd.Series) -> np.ndarray:
    return series.isna().to_numpy()


def _nulls_to_none(values: list[Any], null: np.ndarray) -> list[Any]:
    for i in np.flatnonzero(null):
        values[i] = None
    return values


def column_values(series: pd.Series, field: FieldSpec, record: str) -> list[Any]:
    """Return the values of one column as Python objects for an Avro field.

    Parameters
    ----------
    series : `pandas.Series`
        The column.
    field : `FieldSpec`
        The schema field it fills.
    record : `str`
        Name of the record type (for error messages).

    Returns
    -------
    values : `list`
        Python scalars, ``None`` for nulls of nullable fields.

    Raises
    ------
    AlertSchemaError
        If a non-nullable field has nulls or a value has the wrong type.
    """
    kind = field.type
    try:
        if kind in _FLOAT_TYPES:
            arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
            values = arr.tolist()
            if field.nullable:
                return _nulls_to_none(values, np.isnan(arr))
            return values
        null = _null_mask(series)
        if null.any() and not field.nullable:
            raise AlertSchemaError(
                f"{record}.{field.name} is required by the alert schema but has "
                f"{int(null.sum())} null value(s)"
            )
        if kind in _INT_TYPES:
            if series.dtype.kind in "iu":
                if isinstance(series.dtype, np.dtype):
                    return series.to_numpy().tolist()
                ints = series.to_numpy(dtype=np.int64, na_value=0).tolist()  # nullable Int64
                return _nulls_to_none(ints, null) if field.nullable else ints
            if series.dtype.kind == "f":
                arr = series.to_numpy(dtype=np.float64)
                good = arr[~null]
                if np.any(good != np.round(good)) or np.any(np.abs(good) > 2.0**53):
                    raise AlertSchemaError(
                        f"{record}.{field.name}: float values are not exact integers"
                    )
                ints = np.where(null, 0, arr).astype(np.int64).tolist()
            else:  # nullable Int64 or object
                ints = [0 if n else int(v) for v, n in zip(series.tolist(), null, strict=True)]
            return _nulls_to_none(ints, null) if field.nullable else ints
        if kind == "boolean":
            vals = [bool(v) if not n else None for v, n in zip(series.tolist(), null, strict=True)]
            return vals
        if kind == "string":
            return [str(v) if not n else None for v, n in zip(series.tolist(), null, strict=True)]
        if kind == "bytes":
            return [bytes(v) if not n else None for v, n in zip(series.tolist(), null, strict=True)]
    except (TypeError, ValueError) as exc:
        raise AlertSchemaError(
            f"{record}.{field.name} ({kind}) cannot take the values of column "
            f"{series.name!r} ({series.dtype}): {exc}"
        ) from exc
    raise AlertSchemaError(f"{record}.{field.name}: complex Avro type {kind} is not a column")


def frame_to_records(
    frame: pd.DataFrame,
    spec: RecordSpec,
    defaults: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Convert a DataFrame into records of one schema record type.

    Parameters
    ----------
    frame : `pandas.DataFrame`
        Rows to convert; columns named like the schema fields (Rubin names).
        Index levels named like fields are used too.
    spec : `RecordSpec`
        The record type.
    defaults : `dict`, optional
        Values for fields the frame lacks (a scalar for every row).

    Returns
    -------
    records : `list` [`dict`]
        One dictionary per row with exactly the schema's fields.

    Raises
    ------
    AlertSchemaError
        If a required (non-nullable) field is missing with no default, or a
        column has values the field cannot hold.
    """
    defaults = dict(defaults or {})
    frame = _with_index_columns(frame)
    n = len(frame)
    columns: list[list[Any]] = []
    for field in spec.fields:
        if field.name in frame.columns:
            columns.append(column_values(frame[field.name], field, spec.name))
        elif field.name in defaults:
            columns.append([defaults[field.name]] * n)
        elif field.nullable:
            columns.append([None] * n)
        else:
            raise AlertSchemaError(
                f"{spec.name}.{field.name} is required by the alert schema and the input "
                f"has no such column"
            )
    names = spec.names
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def unused_columns(frame: pd.DataFrame, spec: RecordSpec) -> list[str]:
    """Return the frame's columns that have no field in the record type.

    These would be dropped from the alert; callers report them so that a
    column someone meant to publish is never lost silently.
    """
    frame = _with_index_columns(frame)
    names = set(spec.names)
    return sorted(str(c) for c in frame.columns if c not in names)


def _with_index_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the frame with named index levels as columns (Rubin indexes catalogs)."""
    index_names = [name for name in frame.index.names if name is not None]
    if not index_names:
        return frame
    keep = [name for name in index_names if name not in frame.columns]
    if not keep:
        return frame.reset_index(drop=True)
    return frame.reset_index(level=keep).reset_index(drop=True)
