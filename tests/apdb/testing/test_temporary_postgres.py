"""The throwaway PostgreSQL server used by tests and benchmarks."""

from __future__ import annotations

import psycopg
import pytest

from apdb.testing import TemporaryPostgres, find_postgres_bin

pytestmark = pytest.mark.postgres


def test_server_lifecycle_databases_and_cleanup(postgres_server):
    del postgres_server  # make sure binaries exist (or skip/fail like the others)
    with TemporaryPostgres() as pg:
        assert pg.running
        tmpdir = pg.tmpdir
        url = pg.create_database("tmpl")
        assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        with psycopg.connect(pg.dsn("tmpl"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (a int)")
            conn.execute("INSERT INTO t VALUES (42)")
            assert conn.execute("SHOW fsync").fetchone()[0] == "off"
        pg.create_database("copy", template="tmpl")
        with psycopg.connect(pg.dsn("copy")) as conn:
            assert conn.execute("SELECT a FROM t").fetchone()[0] == 42
        assert {"tmpl", "copy"} <= set(pg.list_databases())
        pg.drop_database("copy")
        assert "copy" not in pg.list_databases()
        with pytest.raises(ValueError):
            pg.create_database("bad name; DROP")
    assert not pg.running
    assert not tmpdir.exists()
    pg.stop()  # idempotent


def test_binaries_are_found():
    assert find_postgres_bin() is None or (find_postgres_bin() / "pg_ctl").exists()
