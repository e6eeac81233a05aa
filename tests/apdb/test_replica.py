"""Replica chunks (issue 13 §1): keys of stored rows and ordered update records.

On SQLite, PostgreSQL and Citus (``replica_apdb_url``).  Chunks are 1 s long
here, so a test's writes may fall into several chunks: every check gathers
all chunks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.time import TimeDelta

from apdb import Apdb
from apdb.config import ApdbConfig, ReplicationConfig
from apdb.errors import AlreadyStoredError, ApdbConfigMismatchError, ReplicationDisabledError
from apdb.sql.citus import explain_tasks
from apdb.sql.replica import rows_in_chunks
from apdb.testing.survey import ID_STRIDE, SurveyPlan, store_survey, visit_frames
from tests.apdb.replica_fixtures import replica_config


@pytest.fixture
def replica_apdb(replica_apdb_url):
    """An APDB created with replication enabled (1 s chunks), on every backend."""
    db = Apdb.from_url(replica_apdb_url)
    yield db
    db.close()


def _all_chunks(db) -> list[int]:
    return [c.id for c in db.get_replica_chunks()]


def test_without_replication_the_api_refuses(apdb):
    """An APDB created without replication: each call raises our error; stores work."""
    plan = SurveyPlan(5)
    store_survey(apdb, plan, [1])
    for call in (
        lambda: apdb.get_replica_chunks(),
        lambda: apdb.get_table_data_chunks("DiaSource", [0]),
        lambda: apdb.get_update_record_chunks([0]),
        lambda: apdb.delete_replica_chunks([0]),
    ):
        with pytest.raises(ReplicationDisabledError, match="without replication"):
            call()
    assert apdb.metadata_values()["config:replication.enabled"] == "false"


def test_replication_setting_is_frozen(replica_apdb):
    url = replica_apdb.config.db_url
    assert replica_apdb.metadata_values()["config:replication.enabled"] == "true"
    assert replica_apdb.metadata_values()["config:replication.chunk_seconds"] == "1"
    with pytest.raises(ApdbConfigMismatchError, match="replication"):
        Apdb.from_config(ApdbConfig(db_url=url, replication=ReplicationConfig(enabled=False)))
    with pytest.raises(ApdbConfigMismatchError, match="chunk_seconds"):
        Apdb.from_config(replica_config(url, chunk_seconds=600))
    with Apdb.from_url(url) as db:  # no setting: what the database holds
        assert db.replication_enabled


def test_store_records_keys_of_new_and_closed_versions(replica_apdb):
    db = replica_apdb
    plan = SurveyPlan(6)
    store_survey(db, plan, [1, 2])
    chunks = _all_chunks(db)
    assert chunks == sorted(chunks) and chunks
    objects = db.get_table_data_chunks("DiaObject", chunks)
    # 6 versions at visit 1 (closed by visit 2's store: recorded again) and 6 at visit 2.
    t1, t2 = (float(plan.visit_time(v).tai.mjd) for v in (1, 2))
    versions = set(zip(objects["diaObjectId"], objects["validityStartMjdTai"], strict=True))
    assert versions == {(int(i), t) for i in plan.object_ids for t in (t1, t2)}
    closed = objects[objects["validityStartMjdTai"] == t1].drop_duplicates(
        "diaObjectId", keep="last"
    )
    assert (closed["validityEndMjdTai"] == t2).all()  # current values
    sources = db.get_table_data_chunks("DiaSource", chunks)
    expected = {v * ID_STRIDE + k for v in (1, 2) for k in range(6)}
    assert set(sources["diaSourceId"]) == expected and len(sources) == 12
    truth = plan.object_ids[(sources["diaSourceId"] % ID_STRIDE).to_numpy()]
    assert (sources["diaObjectId"].to_numpy() == truth).all()
    forced = db.get_table_data_chunks("DiaForcedSource", chunks)
    assert set(forced["diaForcedSourceId"]) == expected
    assert db.get_update_record_chunks(chunks) == []


def test_failed_store_records_nothing(replica_apdb):
    db = replica_apdb
    plan = SurveyPlan(4)
    store_survey(db, plan, [1])
    before = {c: len(db.get_table_data_chunks("DiaSource", [c])) for c in _all_chunks(db)}
    t, objects, sources, forced = visit_frames(plan, 1)
    with pytest.raises(AlreadyStoredError):
        db.store(t, objects, sources, forced)
    after = {c: len(db.get_table_data_chunks("DiaSource", [c])) for c in _all_chunks(db)}
    assert after == before


def test_update_operations_write_ordered_records(replica_apdb):
    db = replica_apdb
    plan = SurveyPlan(4)
    store_survey(db, plan, [1, 2])
    a, b, c, d = (int(i) for i in plan.object_ids)
    src = 2 * ID_STRIDE + 0  # visit 2's source of object a
    db.reassign_dia_sources_to_dia_objects({src: b})
    end = plan.visit_time(2) + TimeDelta(3600.0, format="sec")
    db.set_validity_end([c], end)
    db.withdraw_dia_sources([1 * ID_STRIDE + 3])
    db.withdraw_dia_forced_sources([1 * ID_STRIDE + 3])
    records = db.get_update_record_chunks(_all_chunks(db))
    kinds = [r.kind for r in records]
    assert kinds == [
        "reassign_dia_sources_to_dia_objects",
        "n_dia_sources",
        "set_validity_end",
        "withdraw_dia_sources",
        "withdraw_dia_forced_sources",
    ]
    order = [(r.chunk_id, r.update_time_ns, r.update_order) for r in records]
    assert order == sorted(order)
    assert records[0].payload["rows"] == [[src, b]]
    t2 = float(plan.visit_time(2).tai.mjd)
    # Values, not deltas: visit 2 stored nDiaSources = 2; a lost one, b gained one.
    assert sorted(records[1].payload["rows"]) == [[a, t2, 1], [b, t2, 3]]
    assert records[2].payload["rows"] == [[c, t2, float(end.tai.mjd)]]
    assert records[3].payload["table"] == "DiaSource"
    assert records[3].payload["rows"][0][0] == 1 * ID_STRIDE + 3
    assert records[4].payload["keys"] == ["diaObjectId", "visit", "detector"]


def test_delete_replica_chunks(replica_apdb):
    db = replica_apdb
    store_survey(db, SurveyPlan(3), [1])
    db.withdraw_dia_sources([1 * ID_STRIDE])
    chunks = _all_chunks(db)
    db.delete_replica_chunks(chunks)
    assert db.get_replica_chunks() == []
    assert db.get_table_data_chunks("DiaSource", chunks).empty
    assert db.get_update_record_chunks(chunks) == []
    assert db.row_counts()["DiaSource"] == 3  # the data stay
    assert np.isfinite(
        db.get_dia_sources(
            SurveyPlan(3).visit_time(2), object_ids=[1], months=1, include_withdrawn=True
        )["timeWithdrawnMjdTai"]
    ).all()


def test_store_ss_objects_records_their_ids(replica_apdb):
    """SSObjects written by store_ss_objects are in the chunks with their current values."""
    db = replica_apdb
    db.store_ss_objects(
        pd.DataFrame({"ssObjectId": [900, 901], "designation": ["2024 AB1", "2024 AB2"]})
    )
    db.store_ss_objects(pd.DataFrame({"ssObjectId": [901], "designation": ["2024 AB9"]}))
    chunks = _all_chunks(db)
    got = db.get_table_data_chunks("SSObject", chunks)
    latest = got.drop_duplicates("ssObjectId", keep="last").set_index("ssObjectId")
    assert latest["designation"].to_dict() == {900: "2024 AB1", 901: "2024 AB9"}
    db.delete_replica_chunks(chunks)
    assert db.get_table_data_chunks("SSObject", chunks).empty
    assert len(db.get_ss_objects()) == 2  # the data stay


def test_chunk_keys_carry_the_rows_partition(replica_apdb):
    """Each chunk key row names the partition its data row has (revision 0006)."""
    db = replica_apdb
    plan = SurveyPlan(6, radius=3.0, seed=3)  # objects in several partitions
    store_survey(db, plan, [1, 2])
    md = db.schema_metadata
    with db.engine.connect() as conn:
        for table, chunk, keys in [
            ("DiaObject", "DiaObjectChunks", ("diaObjectId", "validityStartMjdTai")),
            ("DiaSource", "DiaSourceChunks", ("diaSourceId",)),
            ("DiaForcedSource", "DiaForcedSourceChunks", ("diaForcedSourceId",)),
        ]:
            data, rec = md.tables[table], md.tables[chunk]
            # Compared in Python: on Citus a join on the keys alone is not co-located.
            truth = {
                tuple(r[1:]): r[0]
                for r in conn.execute(sa.select(data.c.partitionId, *[data.c[k] for k in keys]))
            }
            pairs = [
                (truth[tuple(r[1:])], r[0])
                for r in conn.execute(sa.select(rec.c.partitionId, *[rec.c[k] for k in keys]))
            ]
            assert pairs and all(a == b for a, b in pairs)
            if table == "DiaObject":
                assert len({a for a, _ in pairs}) > 1


def test_replicator_read_uses_the_data_tables_keys(replica_apdb):
    """The chunk-row read is a key lookup: per shard on Citus, by primary key elsewhere."""
    db = replica_apdb
    store_survey(db, SurveyPlan(6, radius=3.0, seed=3), [1, 2])
    md = db.schema_metadata
    table = md.tables["DiaSource"]
    with db.engine.connect() as conn:
        dialect = conn.dialect.name
        where = rows_in_chunks(md, "DiaSource", np.array(_all_chunks(db)), dialect)
        stmt = sa.select(table.c.diaSourceId).where(where)
        if db.metadata_values().get("config:backend") == "citus":
            tasks, plan = explain_tasks(conn, stmt)
            text = "\n".join(plan)
            # Pushed down to every shard (8) as one co-located join: no
            # intermediate results shipped from the coordinator, no repartition.
            assert tasks == 8 and "Subplan" not in text and "intermediate" not in text.lower()
            return
        compiled = stmt.compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True, "render_postcompile": True}
        )
        prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
        text = "\n".join(str(r[-1]) for r in conn.exec_driver_sql(prefix + str(compiled)))
    # Looked up by the data table's primary key (diaSourceId), the chunk table by chunkId.
    assert "PK_DiaSource" in text or "PRIMARY KEY" in text or "sqlite_autoindex_DiaSource" in text
