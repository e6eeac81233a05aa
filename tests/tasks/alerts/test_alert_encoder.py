"""The column-wise encoder writes exactly fastavro's bytes."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pandas as pd
import pytest

from tasks.alerts.encoder import encode_array, encode_frame, zigzag, zigzag_varints
from tasks.alerts.records import frame_to_records
from tasks.alerts.schema import AlertSchemaError, load_alert_schema


def record_schema(name):
    found = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "record":
                found[node["name"].split(".")[-1]] = node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_alert_schema().definition)
    return fastavro.parse_schema(found[name])


def fastavro_bytes(schema, record):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record, strict=True)
    return buf.getvalue()


def test_varints_match_the_scalar_encoding():
    values = np.array([0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**62, -(2**63), 2**63 - 1])
    data, mask = zigzag_varints(values)
    for v, row, m in zip(values.tolist(), data, mask, strict=True):
        assert row[m].tobytes() == zigzag(v)


def test_random_frames_are_byte_identical_to_fastavro():
    rng = np.random.default_rng(11)
    n = 200
    spec = load_alert_schema().records["diaSource"]
    frame = pd.DataFrame(
        {
            "diaSourceId": rng.integers(-(2**62), 2**62, n),
            "visit": rng.integers(0, 10**7, n),
            "detector": rng.integers(0, 200, n).astype(np.int32),
            "diaObjectId": pd.array(
                [None if rng.uniform() < 0.3 else int(v) for v in rng.integers(0, 2**60, n)],
                dtype="Int64",
            ),
            "ssObjectId": np.where(rng.uniform(size=n) < 0.5, np.nan, 12345.0),
            "midpointMjdTai": rng.uniform(60000, 61000, n),
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-90, 90, n),
            "raErr": np.where(rng.uniform(size=n) < 0.2, np.nan, rng.normal(size=n)),
            "x": rng.uniform(0, 4000, n).astype(np.float32),
            "y": rng.normal(size=n) * 1e30,
            "psfFlux": rng.normal(size=n) * 1e5,
            "psfNdata": rng.integers(0, 1000, n),
            "bboxSize": rng.integers(1, 200, n),
            "band": rng.choice(["u", "g", "r", "é", None], n),
            "isDipole": rng.choice([True, False, None], n),
            "pixelFlags_edge": rng.choice([True, False], n),
            "reliabilityVersion": rng.choice(["", "v1.2-long-version-string", None], n),
            "trailNdata": 0,
            "dipoleNdata": 0,
            "timeProcessedMjdTai": 60001.5,
        }
    )
    encoded = encode_frame(frame, spec)
    schema = record_schema("diaSource")
    for i, record in enumerate(frame_to_records(frame, spec)):
        assert encoded.row(i) == fastavro_bytes(schema, record), i


def test_arrays_and_errors():
    schema = fastavro.parse_schema({"type": "array", "items": "long"})
    for values in ([], [5], [1, -2, 3]):
        items = b"".join(zigzag(v) for v in values)
        assert encode_array(len(values), items) == fastavro_bytes(schema, values)
    spec = load_alert_schema().records["diaForcedSource"]
    with pytest.raises(AlertSchemaError, match="diaForcedSource.diaObjectId is required"):
        encode_frame(pd.DataFrame({"diaForcedSourceId": [1]}), spec)
    bad = pd.DataFrame(
        {
            "diaForcedSourceId": [1],
            "diaObjectId": [1],
            "ra": ["x"],
            "dec": [1.0],
            "visit": [1],
            "detector": [1],
            "midpointMjdTai": [1.0],
            "timeProcessedMjdTai": [1.0],
        }
    )
    with pytest.raises(AlertSchemaError, match="diaForcedSource.ra"):
        encode_frame(bad, spec)
