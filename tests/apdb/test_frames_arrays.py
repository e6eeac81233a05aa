"""`apdb.frames.prepare` on whole pandas blocks and nullable (masked) columns.

Plain numpy columns are converted per pandas block and datatype, nullable
``Int64``/``Float64``/``boolean`` columns from their values and NA mask; the
values, NULL masks and errors must be what the column-by-column rules give.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apdb.errors import ColumnTypeError, NullValueError
from apdb.frames import prepare

MJD = 60000.5


def _sources(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "diaSourceId": np.arange(1, n + 1, dtype=np.int64),
            "visit": np.full(n, 7, dtype=np.int64),
            "detector": np.full(n, 3, dtype=np.int64),  # int64 block into a short column
            "midpointMjdTai": np.full(n, MJD),
            "ra": np.linspace(10.0, 10.1, n),
            "dec": np.linspace(-5.0, -4.9, n),
            "x": np.arange(n, dtype=np.float64),
            "y": np.arange(n, dtype=np.float64),
            "bboxSize": np.full(n, 12.0),  # integral floats into an integer column
        }
    )


def _prepare(df: pd.DataFrame):
    return prepare("DiaSource", df, visit_mjd=MJD, now_mjd=MJD + 1)


def test_block_columns_keep_values_and_types() -> None:
    df = _sources()
    df["psfFlux"] = [1.5, np.nan, 3.0, np.nan, 5.0, 6.0]  # float64 into a nullable float
    batch = _prepare(df)
    assert batch.values["detector"].dtype == np.int16
    assert batch.values["detector"].tolist() == [3] * 6
    assert batch.values["bboxSize"].tolist() == [12] * 6
    assert batch.values["psfFlux"].dtype == np.float32
    assert batch.nulls["psfFlux"].tolist() == [False, True, False, True, False, False]
    assert batch.values["psfFlux"][[0, 2, 4, 5]].tolist() == [1.5, 3.0, 5.0, 6.0]
    assert "x" not in batch.nulls and "detector" not in batch.nulls


def test_masked_columns_give_values_and_null_masks() -> None:
    df = _sources()
    df["ssObjectId"] = pd.array([None, 5, None, 2**40, 7, None], dtype="Int64")
    df["snr"] = pd.array([1.0, None, 3.5, None, 5.0, 6.0], dtype="Float64")
    df["isDipole"] = pd.array([True, None, False, True, None, False], dtype="boolean")
    df["parentDiaSourceId"] = pd.array([1, 2, 3, 4, 5, 6], dtype="Int64")  # no NA
    batch = _prepare(df)
    assert batch.nulls["ssObjectId"].tolist() == [True, False, True, False, False, True]
    assert batch.values["ssObjectId"][[1, 3, 4]].tolist() == [5, 2**40, 7]
    assert batch.values["ssObjectId"].dtype == np.int64
    assert batch.nulls["snr"].tolist() == [False, True, False, True, False, False]
    assert batch.values["snr"][[0, 2, 4, 5]].tolist() == [1.0, 3.5, 5.0, 6.0]
    assert batch.nulls["isDipole"].tolist() == [False, True, False, False, True, False]
    assert batch.values["isDipole"][[0, 2, 3, 5]].tolist() == [True, False, True, False]
    assert "parentDiaSourceId" not in batch.nulls
    assert batch.values["parentDiaSourceId"].tolist() == [1, 2, 3, 4, 5, 6]


def test_masked_na_in_a_not_null_column_is_refused() -> None:
    df = _sources()
    df["visit"] = pd.array([7, 7, None, 7, 7, 7], dtype="Int64")
    with pytest.raises(NullValueError):
        _prepare(df)


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("detector", np.array([3, 3, 40_000, 3, 3, 3], dtype=np.int64)),  # beyond smallint
        ("detector", pd.array([3, None, 3, 3, 70_000, 3], dtype="Int64")),
        ("bboxSize", np.array([1.0, 2.5, 3.0, 4.0, 5.0, 6.0])),  # not integral
        ("psfFlux", np.array([1.0, 2.0, 1e300, 4.0, 5.0, 6.0])),  # beyond float32
        ("isDipole", np.array([0, 1, 2, 0, 1, 0], dtype=np.int64)),  # not 0/1
        ("visit", np.array([True] * 6)),  # bool into an integer column
    ],
)
def test_bad_values_are_refused_whatever_the_storage(column: str, values) -> None:
    df = _sources()
    df[column] = values
    with pytest.raises(ColumnTypeError):
        _prepare(df)
