"""Revision 0005 (replica chunk tables): down and up with data in place, old databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from apdb import Apdb, migrate
from apdb.replica_schema import ReplicaTables
from apdb.schema import metadata
from apdb.testing.survey import SurveyPlan, store_survey
from tests.apdb.replica_fixtures import BACKENDS, fresh_url, replica_config


@pytest.fixture(params=BACKENDS)
def replica_url(request, tmp_path):
    gen = fresh_url(request, tmp_path, request.param, "mig5")
    url = next(gen)
    Apdb.create(replica_config(url)).close()
    yield url
    next(gen, None)


def _diff(conn: sa.Connection) -> list:
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def test_0005_round_trip_keeps_data_and_setting(replica_url):
    plan = SurveyPlan(8)
    with Apdb.from_url(replica_url) as db:
        store_survey(db, plan, [1, 2])
        db.withdraw_dia_sources([2 * 10**6 + 1])
        counts = db.row_counts()
        assert db.get_replica_chunks()
    engine = sa.create_engine(replica_url)
    try:
        with engine.begin() as conn:
            migrate.downgrade(conn, "0004")
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            assert migrate.current_revision(conn) == "0004"
            assert not any(insp.has_table(t.value) for t in ReplicaTables)
            n = conn.execute(sa.text('SELECT count(*) FROM "DiaSource"')).scalar()
            assert n == counts["DiaSource"] == 16
        with engine.begin() as conn:
            migrate.upgrade(conn, "head")
        with engine.connect() as conn:
            assert _diff(conn) == []
    finally:
        engine.dispose()
    with Apdb.from_url(replica_url) as db:
        assert db.row_counts() == counts
        assert db.replication_enabled  # the setting survived the round trip
        assert db.get_replica_chunks() == []  # the unreplicated chunks went with the tables
        store_survey(db, plan, [3])
        chunks = [c.id for c in db.get_replica_chunks()]
        assert len(db.get_table_data_chunks("DiaSource", chunks)) == 8


def test_0005_upgrades_an_older_database_without_replication(replica_url):
    engine = sa.create_engine(replica_url)
    try:
        with engine.begin() as conn:
            migrate.downgrade(conn, "0004")
            # A database created before 0005 has no replication setting.
            conn.execute(sa.text("DELETE FROM metadata WHERE name LIKE 'config:replication.%'"))
        with engine.begin() as conn:
            migrate.upgrade(conn, "head")
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT name, value FROM metadata")).all())
    finally:
        engine.dispose()
    assert rows["config:replication.enabled"] == "false"
    with Apdb.from_url(replica_url) as db:
        assert not db.replication_enabled
