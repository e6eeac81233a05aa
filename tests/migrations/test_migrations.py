"""Migrations and `apdb.schema` agree, round trips keep data, non-head databases are refused."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from astropy.time import Time

from apdb import Apdb, migrate
from apdb.errors import ApdbNotFoundError, ApdbSchemaVersionError
from apdb.schema import metadata
from apdb.sky import Cone
from apdb.testing.catalogs import make_dia_objects, make_dia_sources, random_positions


def _diff(conn: sa.Connection) -> list:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(ctx, metadata)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    """An empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.sqlite3"
    return request.getfixturevalue("postgres_url")


def test_upgrade_from_empty_matches_metadata(empty_url):
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        migrate.upgrade(conn, "head")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert _diff(conn) == []
        views = set(sa.inspect(conn).get_view_names())
    assert {"DiaObjectLatest", "DiaLightCurve"} <= views
    engine.dispose()


def test_history_is_linear_and_documented():
    revs = migrate.history()
    assert [r[0] for r in revs][-1] == "0001"
    assert revs[0][0] == migrate.head_revision()
    assert all(msg.strip() for _, _, msg in revs)


def _store_some(url: str) -> tuple[np.ndarray, Time]:
    rng = np.random.default_rng(3)
    ids = np.arange(1, 31, dtype=np.int64)
    ra, dec = random_positions(30, 45.0, 10.0, 0.05, rng)
    t = Time(60000.0, format="mjd", scale="tai")
    with Apdb.from_url(url) as db:
        db.store(
            t,
            make_dia_objects(ids, ra, dec, rng),
            make_dia_sources(ids + 100, ids, ra, dec, 1, 1, t.mjd, rng),
        )
    return ids, t


def test_downgrade_upgrade_round_trip_keeps_data(apdb_url):
    ids, t = _store_some(apdb_url)
    engine = sa.create_engine(apdb_url)
    with engine.begin() as conn:
        migrate.downgrade(conn, "0001")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == "0001"
        assert "DiaLightCurve" not in sa.inspect(conn).get_view_names()
    with engine.begin() as conn:
        migrate.upgrade(conn, "head")
    with engine.connect() as conn:
        n_curve = conn.execute(sa.text('SELECT count(*) FROM "DiaLightCurve"')).scalar()
        assert _diff(conn) == []
    engine.dispose()
    assert n_curve == 30
    with Apdb.from_url(apdb_url) as db:
        got = db.get_dia_objects(Cone(45.0, 10.0, 0.2))
        assert sorted(got["diaObjectId"]) == ids.tolist()
        assert (
            len(db.get_dia_sources(Time(60001.0, format="mjd", scale="tai"), object_ids=ids)) == 30
        )


def test_non_head_revision_is_refused(apdb_url):
    engine = sa.create_engine(apdb_url)
    with engine.begin() as conn:
        migrate.downgrade(conn, "0001")
    engine.dispose()
    with pytest.raises(ApdbSchemaVersionError, match="'0001'") as info:
        Apdb.from_url(apdb_url)
    assert info.value.expected == migrate.head_revision()


def test_database_without_apdb_is_refused(empty_url):
    with pytest.raises(ApdbNotFoundError, match="holds no APDB"):
        Apdb.from_url(empty_url)
