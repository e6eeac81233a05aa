"""Revision 0006 (partitionId in the chunk key tables, SSObjectChunks): down and up with data.

On SQLite, PostgreSQL and Citus (``replica_apdb_url``).  Chunks recorded
before the upgrade keep their rows and gain their data rows' partitions;
on Citus the key tables end up distributed, co-located with DiaObject.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from apdb import Apdb, migrate
from apdb.schema import metadata
from apdb.testing.survey import ID_STRIDE, SurveyPlan, store_survey

_KEYS = {
    "DiaObject": ["diaObjectId", "validityStartMjdTai"],
    "DiaSource": ["diaSourceId"],
    "DiaForcedSource": ["diaForcedSourceId"],
}


def _chunk_data(db) -> dict[str, pd.DataFrame]:
    chunks = [c.id for c in db.get_replica_chunks()]
    return {
        t: db.get_table_data_chunks(t, chunks).sort_values(["chunkId", *k]).reset_index(drop=True)
        for t, k in _KEYS.items()
    }


def _columns(conn: sa.Connection, table: str) -> list[str]:
    return [c["name"] for c in sa.inspect(conn).get_columns(table)]


def _distributed(conn: sa.Connection) -> dict[str, int]:
    """Citus colocation id of each distributed table."""
    rows = conn.execute(
        sa.text("SELECT CAST(logicalrelid AS text), colocationid FROM pg_dist_partition")
    ).all()
    return {name.strip('"'): int(c) for name, c in rows}


def test_0006_round_trip_keeps_unreplicated_chunks(replica_apdb_url):
    url = replica_apdb_url
    plan = SurveyPlan(10, radius=3.0, seed=4)
    with Apdb.from_url(url) as db:
        store_survey(db, plan, [1, 2])
        db.withdraw_dia_sources([2 * ID_STRIDE + 1])
        before = _chunk_data(db)
        records = db.get_update_record_chunks([c.id for c in db.get_replica_chunks()])
        citus = db.engine.dialect.name == "postgresql" and bool(
            db.metadata_values().get("config:backend") == "citus"
        )
    assert all(len(f) for f in before.values())
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            migrate.downgrade(conn, "0005")
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == "0005"
            assert not sa.inspect(conn).has_table("SSObjectChunks")
            assert "partitionId" not in _columns(conn, "DiaSourceChunks")
            n = conn.execute(sa.text('SELECT count(*) FROM "DiaSourceChunks"')).scalar()
            assert n == len(before["DiaSource"]) == 20
            if citus:  # back on the coordinator
                assert "DiaSourceChunks" not in _distributed(conn)
        with engine.begin() as conn:
            migrate.upgrade(conn, "head")
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
            assert _columns(conn, "DiaObjectChunks")[:2] == ["chunkId", "partitionId"]
            if citus:
                placed = _distributed(conn)
                for table in ("DiaObjectChunks", "DiaSourceChunks", "DiaForcedSourceChunks"):
                    assert placed[table] == placed["DiaObject"]
                assert "SSObjectChunks" not in placed
            else:
                ctx = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()
    with Apdb.from_url(url) as db:
        after = _chunk_data(db)
        for table in _KEYS:
            pd.testing.assert_frame_equal(after[table], before[table])
        assert db.get_update_record_chunks([c.id for c in db.get_replica_chunks()]) == records
        # Recorded partitions are those of the rows.
        md = db.schema_metadata
        with db.engine.connect() as conn:
            rec = md.tables["DiaSourceChunks"]
            got = dict(conn.execute(sa.select(rec.c.diaSourceId, rec.c.partitionId)).all())
        src = before["DiaSource"].set_index("diaSourceId")["partitionId"].to_dict()
        assert got == src and len(set(got.values())) > 1
        # New stores and SSObjects are recorded in the new layout.
        store_survey(db, plan, [3])
        db.store_ss_objects(pd.DataFrame({"ssObjectId": [77], "designation": ["2026 XY"]}))
        chunks = [c.id for c in db.get_replica_chunks()]
        assert len(db.get_table_data_chunks("DiaSource", chunks)) == 30
        assert db.get_table_data_chunks("SSObject", chunks)["ssObjectId"].tolist() == [77]
