"""Revision 0004's backfill gives every row the partitionId the store gives it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.time import Time

from apdb import Apdb, migrate
from apdb.sky import pixel_index
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

_TABLES = {
    "DiaObject": ("diaObjectId", "validityStartMjdTai"),
    "DiaSource": ("diaSourceId",),
    "DiaForcedSource": ("diaObjectId", "visit", "detector"),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def filled_url(request, tmp_path):
    """An APDB at head with objects whose second version moved to another partition."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/apdb.sqlite3"
    else:
        url = request.getfixturevalue("postgres_url")
    Apdb.create(url).close()
    rng = np.random.default_rng(11)
    n = 400
    ids = np.arange(1, n + 1, dtype=np.int64)
    # Straddling order-6 pixel boundaries: a 2 degree field holds several.
    ra, dec = random_positions(n, 120.0, -20.0, 2.0, rng)
    with Apdb.from_url(url) as db:
        for visit in (1, 2):
            mjd = 60000.0 + visit
            t = Time(mjd, format="mjd", scale="tai")
            # The second version moves by 1.5 degrees: its own pixel is mostly
            # another partition, the object's stays that of its first version.
            vra = ra + (visit - 1) * 1.5
            objects = make_dia_objects(ids, vra, dec, rng)
            sources = make_dia_sources(ids + visit * 10_000, ids, vra, dec, visit, 1, mjd, rng)
            if visit == 2:
                # Sources of no object: their own position's partition.
                orphans = make_dia_sources(
                    np.arange(90_001, 90_051, dtype=np.int64),
                    np.zeros(50, dtype=np.int64),
                    vra[:50] + 3.0,
                    dec[:50],
                    visit,
                    1,
                    mjd,
                    rng,
                )
                orphans["diaObjectId"] = pd.array([pd.NA] * 50, dtype="Int64")
                sources = pd.concat([sources, orphans], ignore_index=True)
                orphan_parts = pixel_index(vra[:50] + 3.0, dec[:50], 6)
            forced = make_dia_forced_sources(
                ids + visit * 20_000, ids, vra, dec, visit, 1, mjd, rng
            )
            db.store(t, objects, sources, forced)
    return url, orphan_parts


def _partitions(conn: sa.Connection) -> dict[str, dict[tuple, int]]:
    out = {}
    for table, key in _TABLES.items():
        cols = ", ".join(f'"{c}"' for c in key)
        rows = conn.execute(sa.text(f'SELECT {cols}, "partitionId" FROM "{table}"')).all()
        out[table] = {tuple(r[:-1]): r[-1] for r in rows}
    return out


def test_backfill_matches_store(filled_url):
    filled_url, orphan_parts = filled_url
    engine = sa.create_engine(filled_url)
    try:
        with engine.connect() as conn:
            stored = _partitions(conn)
        # Known truth: the first version's position fixes an object's partition.
        first = {k[0]: p for k, p in stored["DiaObject"].items() if k[1] == 60001.0}
        assert len(first) == 400
        moved = sum(
            1 for k, p in stored["DiaObject"].items() if k[1] == 60002.0 and p == first[k[0]]
        )
        assert moved == 400
        assert len(set(first.values())) > 1
        # Online (alembic owns the transactions, batched): as apdb upgrade runs it.
        migrate.downgrade(engine, "0003")
        with engine.connect() as conn:
            assert "partitionId" not in {
                c["name"] for c in sa.inspect(conn).get_columns("DiaSource")
            }
        migrate.upgrade(engine, "head")
        with engine.connect() as conn:
            again = _partitions(conn)
    finally:
        engine.dispose()
    assert again == stored
    orphans = {k: p for k, p in stored["DiaSource"].items() if k[0] > 90_000}
    assert [orphans[(i,)] for i in range(90_001, 90_051)] == orphan_parts.tolist()
    with Apdb.from_url(filled_url) as db:
        src = db.get_dia_sources(Time(60003.0, format="mjd", scale="tai"), object_ids=np.array([1]))
    assert len(src) == 2
