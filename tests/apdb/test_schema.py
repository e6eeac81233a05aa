"""`apdb.schema` against Rubin's apdb.yaml (lsst-sdm-schemas) and the alert schema."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
import yaml

from apdb import schema
from apdb.schema import ApdbTables, metadata, required_columns, table_columns

RUBIN_TABLES = [
    "DiaObject",
    "DiaSource",
    "DiaForcedSource",
    "SSObject",
    "SSSource",
    "DiaObject_To_Object_Match",
]
OUR_COLUMNS = {"pixelId", "partitionId"}  # our sky index and the Citus partition (0004)


@pytest.fixture(scope="module")
def rubin():
    sdm = pytest.importorskip("lsst.sdm.schemas")
    path = os.path.join(os.path.dirname(sdm.__file__), "apdb.yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    return doc, {t["name"]: t for t in doc["tables"]}


@pytest.fixture(scope="module")
def alert_schema():
    packet = pytest.importorskip("lsst.alert.packet")
    return packet.Schema.from_file().definition


def test_columns_names_types_nullability_match_rubin(rubin):
    doc, tables = rubin
    assert doc["version"] == schema.RUBIN_SCHEMA_VERSION
    for name in RUBIN_TABLES:
        ours = {c.name: c for c in table_columns(name)}
        theirs = {c["name"]: c for c in tables[name]["columns"]}
        assert set(ours) - OUR_COLUMNS == set(theirs), name
        for col_name, col in theirs.items():
            mine = ours[col_name]
            assert mine.datatype == col["datatype"], (name, col_name)
            assert mine.nullable == col.get("nullable", True), (name, col_name)
            assert mine.length == col.get("length"), (name, col_name)


def test_sql_types_follow_felis_types():
    expected = {
        "long": sa.BigInteger,
        "int": sa.Integer,
        "short": sa.SmallInteger,
        "double": sa.Double,
        "float": sa.REAL,
        "boolean": sa.Boolean,
        "char": sa.CHAR,
        "string": sa.VARCHAR,
    }
    for name in RUBIN_TABLES:
        table = metadata.tables[name]
        for col in table_columns(name):
            assert isinstance(table.c[col.name].type, expected[col.datatype]), col.name


def _record_fields(definition, record_name):
    for field in definition["fields"]:
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for kind in kinds:
            if isinstance(kind, dict) and kind.get("type") == "array":
                kind = kind["items"]
            is_record = isinstance(kind, dict) and kind.get("type") == "record"
            if is_record and kind["name"].endswith(record_name):
                return kind["fields"]
    raise KeyError(record_name)


@pytest.mark.parametrize(
    ("record", "table"),
    [
        ("diaSource", "DiaSource"),
        ("diaObject", "DiaObject"),
        ("diaForcedSource", "DiaForcedSource"),
        ("ssSource", "SSSource"),
    ],
)
def test_every_alert_field_has_a_column(alert_schema, record, table):
    ours = {c.name: c for c in table_columns(table)}
    for field in _record_fields(alert_schema, record):
        assert field["name"] in ours, f"{table} lacks {field['name']} of the alert's {record}"
        # A non-nullable alert field must not come from a nullable column.
        if not isinstance(field["type"], list):
            assert not ours[field["name"]].nullable, field["name"]


def test_pixel_index_and_latest_indexes_exist():
    names = {ix.name for t in metadata.tables.values() for ix in t.indexes}
    assert {
        "IDX_DiaObject_last_pixelId",
        "IDX_DiaSource_pixelId",
        "IDX_DiaForcedSource_pixelId",
        "IDX_DiaObject_last_diaObjectId",
    } <= names
    for table in ("DiaObject", "DiaSource", "DiaForcedSource"):
        col = metadata.tables[table].c.pixelId
        assert isinstance(col.type, sa.BigInteger) and not col.nullable
    # The naming convention makes constraint names deterministic.
    assert metadata.tables["DiaSource"].primary_key.name == "PK_DiaSource"


def test_required_columns():
    assert required_columns("DiaSource") == [
        "diaSourceId",
        "visit",
        "detector",
        "midpointMjdTai",
        "ra",
        "dec",
        "x",
        "y",
        "bboxSize",
    ]
    assert required_columns("DiaObject") == ["diaObjectId", "ra", "dec", "nDiaSources"]
    assert set(required_columns("DiaForcedSource")) == {
        "diaForcedSourceId",
        "diaObjectId",
        "ra",
        "dec",
        "visit",
        "detector",
        "midpointMjdTai",
    }
    # every table is an APDB table, a replica-chunk table (revision 0005) or
    # the history chunks (revision 0008)
    from apdb.replica_schema import ReplicaTables
    from apdb.schema import CHUNK_TABLE

    tables = {t.value for t in ApdbTables} | {t.value for t in ReplicaTables} | {CHUNK_TABLE}
    assert tables == set(metadata.tables)
