"""Database failures reach callers as `ApdbError` subclasses (`apdb.sql.errors_map`).

- a connection terminated while a read waits on the server;
- a server that is stopped under an open APDB;
- a read-only SQLite database written to;
- the translator itself on real driver exceptions.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import threading
import time

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from astropy.time import Time

from apdb import Apdb
from apdb.errors import (
    ApdbDatabaseError,
    ApdbError,
    ApdbNotFoundError,
    ApdbPermissionError,
)
from apdb.sky import Cone
from apdb.sql.errors_map import database_error, translate_errors
from apdb.testing import TemporaryPostgres
from apdb.testing.catalogs import make_dia_objects, make_dia_sources, random_positions

RA, DEC = 210.0, -30.0
T0 = Time(60200.0, format="mjd", scale="tai")
T_READ = Time(60201.0, format="mjd", scale="tai")
IDS = np.arange(1, 31, dtype=np.int64)
_names = itertools.count()


def _fill(db: Apdb) -> None:
    rng = np.random.default_rng(8)
    ra, dec = random_positions(len(IDS), RA, DEC, 0.05, rng)
    db.store(
        T0,
        make_dia_objects(IDS, ra, dec, rng),
        make_dia_sources(IDS + 100, IDS, ra, dec, 1, 2, T0.mjd, rng),
    )


READS = {
    "get_dia_objects": lambda db: db.get_dia_objects(Cone(RA, DEC, 0.2)),
    "get_dia_sources": lambda db: db.get_dia_sources(T_READ, object_ids=IDS),
    "get_dia_forced_sources": lambda db: db.get_dia_forced_sources(T_READ, region=Cone(RA, DEC, 1)),
    "get_ss_objects": lambda db: db.get_ss_objects(),
    "contains_visit_detector": lambda db: db.contains_visit_detector(1, 2),
    "count_unassociated_objects": lambda db: db.count_unassociated_objects(),
    "row_counts": lambda db: db.row_counts(),
}

# The table each read waits on when another transaction locks it.
_LOCKED_TABLE = {
    "get_dia_objects": "DiaObject",
    "get_dia_sources": "DiaSource",
    "get_dia_forced_sources": "ApdbHistoryChunk",  # a read with a region: the chunks
    "get_ss_objects": "SSObject",
    "contains_visit_detector": "ApdbVisitDetector",
    "count_unassociated_objects": "DiaObject",
    "row_counts": "DiaObject",
}


def _database_name(url: str) -> str:
    return sa.make_url(url).database


@pytest.fixture
def pg_apdb_url(postgres_server, postgres_template):
    """A fresh PostgreSQL APDB (a lost connection is a client/server event)."""
    name = f"lost_{os.getpid()}_{next(_names)}"
    yield postgres_server.create_database(name, template=postgres_template)
    postgres_server.drop_database(name)


@pytest.mark.postgres
@pytest.mark.parametrize("name", list(READS))
def test_connection_lost_during_read(postgres_server, pg_apdb_url, name):
    apdb_url = pg_apdb_url
    read = READS[name]
    with Apdb.from_url(apdb_url) as db:
        _fill(db)
        expected = read(db)
        # The server of apdb_url (the Citus coordinator for the citus case).
        url = sa.make_url(apdb_url)
        admin = psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=_database_name(apdb_url)
        )
        try:
            # Hold the table so that the read waits inside the server ...
            admin.execute(f'LOCK TABLE "{_LOCKED_TABLE[name]}" IN ACCESS EXCLUSIVE MODE')
            outcome: dict[str, object] = {}

            def run() -> None:
                try:
                    outcome["value"] = read(db)
                except BaseException as exc:  # noqa: BLE001 - inspected below
                    outcome["error"] = exc

            thread = threading.Thread(target=run)
            thread.start()
            # ... then terminate its backend, as a failover or an operator would.
            killed = 0
            deadline = time.monotonic() + 30
            while not killed and time.monotonic() < deadline:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                time.sleep(0.02)
            thread.join(60)
        finally:
            admin.rollback()
            admin.close()
        assert killed == 1
        assert "value" not in outcome
        error = outcome["error"]
        assert isinstance(error, ApdbDatabaseError), repr(error)
        assert "lost the connection" in str(error)
        assert name in str(error)
        assert error.__cause__ is not None
        # The pool recovers: the next call reconnects and gives the same answer.
        got = read(db)
        if hasattr(got, "equals"):
            assert (
                got.sort_values(got.columns[0])
                .reset_index(drop=True)
                .equals(expected.sort_values(expected.columns[0]).reset_index(drop=True))
            )
        else:
            assert got == expected


@pytest.mark.postgres
def test_server_down(postgres_server):
    """Reads and stores of an open APDB raise ApdbDatabaseError once the server stops."""
    with TemporaryPostgres() as server:
        url = server.create_database("apdb_down")
        Apdb.create(url).close()
        db = Apdb.from_url(url)
        _fill(db)
        server.stop()
        try:
            for name, read in READS.items():
                with pytest.raises(ApdbDatabaseError, match=name) as info:
                    read(db)
                assert info.value.__cause__ is not None
            rng = np.random.default_rng(1)
            ra, dec = random_positions(3, RA, DEC, 0.05, rng)
            with pytest.raises(ApdbDatabaseError):
                db.store(T_READ, make_dia_objects(np.arange(50, 53), ra, dec, rng))
            with pytest.raises(ApdbDatabaseError, match="open the APDB"):
                Apdb.from_url(url)
        finally:
            db.close()


def test_read_only_sqlite_refuses_writes(sqlite_template, tmp_path):
    path = tmp_path / "ro.sqlite3"
    shutil.copyfile(sqlite_template, path)
    with Apdb.from_url(f"sqlite:///{path}") as db:
        _fill(db)
    before = path.read_bytes()
    with Apdb.from_url(f"sqlite:///file:{path}?mode=ro&uri=true") as db:
        assert len(db.get_dia_objects(Cone(RA, DEC, 0.2))) == len(IDS)
        rng = np.random.default_rng(2)
        ra, dec = random_positions(3, RA, DEC, 0.05, rng)
        with pytest.raises(ApdbPermissionError, match="permission denied") as info:
            db.store(T_READ, make_dia_objects(np.arange(50, 53), ra, dec, rng))
        assert isinstance(info.value.__cause__, (sa.exc.SQLAlchemyError, sqlite3.Error))
    with Apdb.from_url(f"sqlite:///{path}") as db:
        assert db.row_counts()["DiaObject"] == len(IDS)
    assert path.read_bytes() == before


def test_translator_on_real_driver_errors(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as notadb:
        sqlite3.connect(junk).execute("SELECT count(*) FROM sqlite_master")
    error = database_error(notadb.value, "peek")
    assert isinstance(error, ApdbDatabaseError) and "peek: not an SQLite database" in str(error)

    with pytest.raises(sqlite3.OperationalError) as missing:
        sqlite3.connect(f"file:{tmp_path}/none.db?mode=rw", uri=True)
    assert isinstance(database_error(missing.value, "peek"), ApdbNotFoundError)

    denied = psycopg.errors.InsufficientPrivilege("permission denied for table DiaSource")
    error = database_error(sa.exc.ProgrammingError("UPDATE ...", None, denied), "withdraw")
    assert isinstance(error, ApdbPermissionError)
    assert str(error).startswith("withdraw: permission denied (permission denied for table")

    # ApdbErrors pass through; other exceptions (bugs) are not disguised.
    with pytest.raises(ApdbNotFoundError), translate_errors("x"):
        raise ApdbNotFoundError("gone")
    with pytest.raises(KeyError), translate_errors("x"):
        raise KeyError("bug")
    # An ApdbDatabaseError wrapping a privilege error is made precise.
    with (
        pytest.raises(ApdbPermissionError, match="^store: permission denied"),
        translate_errors("store"),
    ):
        raise ApdbDatabaseError("store failed") from denied
    assert issubclass(ApdbPermissionError, ApdbError)
