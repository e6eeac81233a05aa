"""The read-only role on PostgreSQL: a login member of ``apdb_reader`` reads, never writes.

Every read method gives the reader exactly what it gives the owner; every
write method raises `ApdbPermissionError` and leaves the database as it was.
A login role that is not a member cannot even open the APDB (also our error).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from astropy.time import Time
from psycopg import sql

from apdb import Apdb
from apdb.errors import ApdbPermissionError
from apdb.sky import Cone
from apdb.testing import TemporaryPostgres
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)

pytestmark = pytest.mark.postgres

RA, DEC = 150.0, 2.0
T1 = Time(60100.0, format="mjd", scale="tai")
T2 = Time(60101.0, format="mjd", scale="tai")
T_READ = Time(60102.0, format="mjd", scale="tai")
_names = itertools.count()


def _login_role(server: TemporaryPostgres, url: str, member: bool) -> Iterator[str]:
    """Create a LOGIN role (optionally in ``apdb_reader``); yield its URL on ``url``'s database."""
    name = f"analyst_{os.getpid()}_{next(_names)}"
    create = sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name))
    if member:
        create = sql.SQL("{} IN ROLE apdb_reader").format(create)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(create)
    try:
        yield sa.make_url(url).set(username=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def pg_apdb_url(postgres_server: TemporaryPostgres, postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL APDB holding two visits (owner: ``postgres``)."""
    name = f"roles_{os.getpid()}_{next(_names)}"
    url = postgres_server.create_database(name, template=postgres_template)
    rng = np.random.default_rng(12)
    ids = np.arange(1, 41, dtype=np.int64)
    ra, dec = random_positions(40, RA, DEC, 0.05, rng)
    with Apdb.from_url(url) as db:
        for visit, t in ((1, T1), (2, T2)):
            db.store(
                t,
                make_dia_objects(ids, ra, dec, rng, n_sources=visit),
                make_dia_sources(ids + 1000 * visit, ids, ra, dec, visit, 5, t.mjd, rng),
                make_dia_forced_sources(ids + 1000 * visit, ids, ra, dec, visit, 5, t.mjd, rng),
            )
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def reader_url(postgres_server, pg_apdb_url) -> Iterator[str]:
    yield from _login_role(postgres_server, pg_apdb_url, member=True)


def _reads() -> dict[str, Callable[[Apdb], object]]:
    cone = Cone(RA, DEC, 0.2)
    ids = np.arange(1, 21)
    reads: dict[str, Callable[[Apdb], object]] = {
        "get_dia_objects": lambda db: db.get_dia_objects(cone),
        "get_dia_sources(region)": lambda db: db.get_dia_sources(T_READ, region=cone),
        "get_dia_sources(ids)": lambda db: db.get_dia_sources(T_READ, object_ids=ids),
        "get_dia_forced_sources": lambda db: db.get_dia_forced_sources(T_READ, region=cone),
        "get_ss_objects": lambda db: db.get_ss_objects(),
        "contains_visit_detector": lambda db: db.contains_visit_detector(2, 5),
        "count_unassociated_objects": lambda db: db.count_unassociated_objects(),
        "row_counts": lambda db: db.row_counts(),
        "schema_version": lambda db: db.schema_version(),
    }
    optional = {
        "get_light_curve": lambda db: db.get_light_curve(3),
        "get_busiest_dia_objects": lambda db: db.get_busiest_dia_objects(3),
        "metadata_values": lambda db: db.metadata_values(),
        "metadata": lambda db: (db.metadata.get("created"), list(db.metadata.items())),
        "get_dia_objects_for_dedup": lambda db: db.get_dia_objects_for_dedup(),
        "get_dia_sources_for_dia_objects": lambda db: db.get_dia_sources_for_dia_objects(ids, T1),
    }
    reads.update({k: f for k, f in optional.items() if hasattr(Apdb, k.split("(")[0])})
    return reads


def _writes() -> dict[str, Callable[[Apdb], object]]:
    rng = np.random.default_rng(4)
    ids = np.arange(1, 6, dtype=np.int64)
    ra, dec = random_positions(5, RA, DEC, 0.05, rng)
    t3 = Time(60103.0, format="mjd", scale="tai")
    ss = pd.DataFrame({"ssObjectId": [7], "designation": ["2026 AB"]})
    writes: dict[str, Callable[[Apdb], object]] = {
        "store": lambda db: db.store(
            t3,
            make_dia_objects(ids, ra, dec, rng),
            make_dia_sources(ids + 3000, ids, ra, dec, 3, 5, t3.mjd, rng),
        ),
        "store(forced only)": lambda db: db.store(
            t3, None, None, make_dia_forced_sources(ids + 3000, ids, ra, dec, 3, 5, t3.mjd, rng)
        ),
        "store_ss_objects": lambda db: db.store_ss_objects(ss),
        "reassign_dia_sources": lambda db: db.reassign_dia_sources({1001: 7}),
    }
    optional = {
        "reassign_dia_sources_to_dia_objects": lambda db: db.reassign_dia_sources_to_dia_objects(
            {1001: 2}
        ),
        "set_validity_end": lambda db: db.set_validity_end([1, 2], T_READ),
        "withdraw_dia_sources": lambda db: db.withdraw_dia_sources([1001]),
        "withdraw_dia_forced_sources": lambda db: db.withdraw_dia_forced_sources([1001]),
        "reset_dedup": lambda db: db.reset_dedup(),
        "metadata.set": lambda db: db.metadata.set("note", "x"),
        "metadata.delete": lambda db: db.metadata.delete("note"),
    }
    writes.update({k: f for k, f in optional.items() if hasattr(Apdb, k.split(".")[0])})
    return writes


def _same(a: object, b: object) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(
            a.sort_values(list(a.columns[:1])).reset_index(drop=True),
            b.sort_values(list(b.columns[:1])).reset_index(drop=True),
        )
    else:
        assert a == b


def test_reader_opens_and_reads_everything(pg_apdb_url, reader_url):
    with Apdb.from_url(pg_apdb_url) as owner, Apdb.from_url(reader_url) as reader:
        for name, read in _reads().items():
            expected = read(owner)
            got = read(reader)
            assert type(got) is type(expected), name
            _same(got, expected)
        # The data are really there (the comparison is not between two empty reads).
        assert len(reader.get_dia_objects(Cone(RA, DEC, 0.2))) == 40
        assert len(reader.get_dia_sources(T_READ, object_ids=np.arange(1, 21))) == 40


def test_reader_writes_raise_permission_error(pg_apdb_url, reader_url):
    with Apdb.from_url(pg_apdb_url) as owner:
        before = {name: read(owner) for name, read in _reads().items()}
    with Apdb.from_url(reader_url) as reader:
        for name, write in _writes().items():
            with pytest.raises(ApdbPermissionError, match="permission denied") as info:
                write(reader)
            assert info.value.__cause__ is not None, name
            # The message starts with the refused operation.
            assert info.value.operation, name
            assert str(info.value).startswith(f"{info.value.operation}: permission denied")
    with Apdb.from_url(pg_apdb_url) as owner:
        for name, read in _reads().items():
            _same(read(owner), before[name])
        assert not owner.contains_visit_detector(3, 5)


def test_login_role_outside_reader_cannot_open(postgres_server, pg_apdb_url):
    for url in _login_role(postgres_server, pg_apdb_url, member=False):
        with pytest.raises(ApdbPermissionError, match="open the APDB: permission denied"):
            Apdb.from_url(url)
