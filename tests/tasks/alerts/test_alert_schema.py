"""The alert schema comes from lsst-alert-packet, its latest version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lsst.alert.packet import get_latest_schema_version, get_schema_path

from tasks.alerts.records import frame_to_records, unused_columns
from tasks.alerts.schema import AlertSchemaError, load_alert_schema


def test_latest_version_from_the_package():
    schema = load_alert_schema()
    major, minor = get_latest_schema_version()
    assert schema.version == f"{major}.{minor}"
    # the record types are exactly those of the package's files
    folder = Path(get_schema_path(major, minor))
    for name in ("diaSource", "diaObject", "diaForcedSource", "ssSource"):
        doc = json.loads((folder / f"lsst.v{major}_{minor}.{name}.avsc").read_text())
        assert schema.records[name].names == [f["name"] for f in doc["fields"]]


def test_unknown_version_is_a_clear_error():
    with pytest.raises(AlertSchemaError, match="no alert schema version 1.99"):
        load_alert_schema("1.99")
    with pytest.raises(AlertSchemaError, match="MAJOR.MINOR"):
        load_alert_schema("latest")


def test_frame_conversion_nulls_types_and_big_ids():
    spec = load_alert_schema().records["diaForcedSource"]
    big = 2**60 + 3  # beyond float64's exact integers
    frame = pd.DataFrame(
        {
            "diaForcedSourceId": np.array([big, big + 1], dtype=np.int64),
            "diaObjectId": pd.array([big, big], dtype="Int64"),
            "ra": [1.0, 2.0],
            "dec": [3.0, np.nan],  # required double: NaN stays NaN
            "visit": np.array([5, 6], dtype=np.int32),
            "detector": [1, 1],
            "midpointMjdTai": 60000.0,
            "timeProcessedMjdTai": 60000.1,
            "psfFlux": [np.nan, 1.5],
            "band": ["r", None],
            "extra": 1,
        }
    )
    records = frame_to_records(frame, spec)
    assert records[0]["diaForcedSourceId"] == big and records[1]["diaObjectId"] == big
    assert type(records[0]["visit"]) is int
    assert records[0]["psfFlux"] is None and records[1]["psfFlux"] == 1.5
    assert records[1]["band"] is None and records[0]["timeWithdrawnMjdTai"] is None
    assert np.isnan(records[1]["dec"])
    assert set(records[0]) == set(spec.names)
    assert unused_columns(frame, spec) == ["extra"]


def test_required_fields_missing_or_null_are_refused():
    spec = load_alert_schema().records["diaForcedSource"]
    frame = pd.DataFrame({"diaForcedSourceId": [1], "ra": [1.0]})
    with pytest.raises(AlertSchemaError, match="diaForcedSource.diaObjectId is required"):
        frame_to_records(frame, spec)
    nulls = pd.DataFrame(
        {
            "diaForcedSourceId": [1, 2],
            "diaObjectId": pd.array([1, None], dtype="Int64"),
            "ra": 1.0,
            "dec": 1.0,
            "visit": 1,
            "detector": 1,
            "midpointMjdTai": 1.0,
            "timeProcessedMjdTai": 1.0,
        }
    )
    with pytest.raises(AlertSchemaError, match="1 null value"):
        frame_to_records(nulls, spec)
    wrong = nulls.assign(diaObjectId=[1.5, 2.0])
    with pytest.raises(AlertSchemaError, match="not exact integers"):
        frame_to_records(wrong, spec)
