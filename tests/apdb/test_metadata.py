"""`Apdb.metadata`: Rubin's key/value interface, with the creation-time keys frozen."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apdb import Apdb
from apdb.errors import (
    ApdbConfigMismatchError,
    ApdbInputError,
    FrozenMetadataError,
    MetadataExistsError,
)
from apdb.metadata import is_frozen
from apdb.schema import metadata as schema_md
from apdb.sql.metadata import ApdbMetadataSql

FROZEN = (
    "config:backend",
    "config:sky.index_order",
    "config:sky.partition_order",
    "version:rubin_schema",
    "created",
)


def test_metadata_set_get_delete_like_rubin(apdb):
    md = apdb.metadata
    # A new APDB holds the values written at creation.
    assert not md.empty()
    # Which settings are frozen depends on the backend (Citus adds its own):
    # all are frozen keys, the common ones are there, in key order.
    initial = [k for k, _ in md.items()]
    assert all(is_frozen(k) for k in initial) and initial == sorted(initial)
    assert {"config:sky.index_order", "version:rubin_schema", "created"} <= set(initial)
    assert md.get("config:sky.index_order") == "29"

    md.set("meta", "data")
    md.set("data", "meta")
    assert {("meta", "data"), ("data", "meta")} <= set(md.items())

    with pytest.raises(MetadataExistsError, match="'meta' already exists"):
        md.set("meta", "data1")
    assert md.get("meta") == "data"  # the refused set changed nothing

    md.set("meta", "data2", force=True)
    assert {("meta", "data2"), ("data", "meta")} <= set(md.items())

    assert md.delete("meta") is True
    assert md.get("meta") is None
    assert md.delete("meta") is False
    assert md.get("data") == "meta"
    assert md.get("meta", "fallback") == "fallback"
    assert [k for k, _ in md.items()] == sorted([*initial, "data"])


def test_metadata_is_shared_by_every_connection(apdb_url):
    with Apdb.from_url(apdb_url) as a, Apdb.from_url(apdb_url) as b:
        a.metadata.set("shift", "night 1")
        assert b.metadata.get("shift") == "night 1"
        b.metadata.set("shift", "night 2", force=True)
        assert a.metadata.get("shift") == "night 2"


@pytest.mark.parametrize("key", [*FROZEN, "config:new_setting", "version:other"])
def test_frozen_keys_cannot_be_set_or_deleted(apdb, key):
    before = list(apdb.metadata.items())
    with pytest.raises(FrozenMetadataError, match="frozen"):
        apdb.metadata.set(key, "12", force=True)
    with pytest.raises(FrozenMetadataError, match="frozen"):
        apdb.metadata.set(key, "12")
    with pytest.raises(FrozenMetadataError, match="frozen"):
        apdb.metadata.delete(key)
    assert list(apdb.metadata.items()) == before


def test_frozen_settings_still_guard_the_database(apdb_url):
    with Apdb.from_url(apdb_url) as db, pytest.raises(FrozenMetadataError):
        db.metadata.set("config:sky.index_order", "12", force=True)
    # The stored order is intact, so a config that disagrees is still refused.
    with pytest.raises(ApdbConfigMismatchError, match="index_order"):
        Apdb.from_url(apdb_url, sky={"index_order": 12})
    Apdb.from_url(apdb_url).close()


@pytest.mark.parametrize(
    ("key", "value"), [("", "x"), ("k", ""), (None, "x"), ("k", None), (3, "x"), ("k", 3)]
)
def test_empty_or_non_string_keys_and_values_are_refused(apdb, key, value):
    before = list(apdb.metadata.items())
    with pytest.raises(ApdbInputError, match="non-empty strings"):
        apdb.metadata.set(key, value)
    assert list(apdb.metadata.items()) == before


def test_empty_when_the_table_is_missing(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/none.sqlite3")
    try:
        md = ApdbMetadataSql(engine, schema_md.tables["metadata"])
        assert md.empty() is True
    finally:
        engine.dispose()


def test_schema_metadata_is_the_sqlalchemy_schema(apdb):
    tables = apdb.schema_metadata.tables
    assert {"DiaObject", "DiaSource", "metadata", "DiaObject_To_Object_Match"} <= set(tables)
    assert isinstance(apdb.schema_metadata, sa.MetaData)
