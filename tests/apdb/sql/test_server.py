"""`apdb.sql.server`: server-level statements on the session's throwaway PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from apdb.sql import server

pytestmark = pytest.mark.postgres


def test_create_copy_forbid_terminate_drop(postgres_server):
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        server.create_database(admin, "srv_source")
        with psycopg.connect(postgres_server.dsn("srv_source"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (7)")
        server.create_database(admin, "srv_copy", template="srv_source", file_copy=True)
        with psycopg.connect(postgres_server.dsn("srv_copy")) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
        assert {"srv_source", "srv_copy"} <= set(server.list_databases(admin))

        # a session on the source ends when terminated; new ones are refused once forbidden
        victim = psycopg.connect(postgres_server.dsn("srv_source"), autocommit=True)
        server.forbid_connections(admin, "srv_source")
        server.terminate_sessions(admin, "srv_source")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        victim.close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(postgres_server.dsn("srv_source"))

        for name in ("srv_copy", "srv_source"):
            server.drop_database(admin, name)
        server.drop_database(admin, "srv_source")  # IF EXISTS: no error
        assert not {"srv_source", "srv_copy"} & set(server.list_databases(admin))
