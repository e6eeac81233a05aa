"""The PostgreSQL server the benchmark runs on.

By default a throwaway server (`apdb.testing.TemporaryPostgres`: durability
off, never for real data) is started and removed afterwards; with a DSN an
existing server is used instead and the benchmark's databases are dropped at
the end.  Optionally ``pg_stat_statements`` is loaded so the costliest
statements of each implementation can be reported.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import URL

from apdb.testing import TemporaryPostgres


class Server:
    """A PostgreSQL server holding one database per implementation.

    Parameters
    ----------
    dsn : `str`, optional
        libpq DSN of an existing server (a role allowed to create databases);
        a throwaway server is started when `None`.
    pg_stats : `bool`
        Load ``pg_stat_statements`` (needs it in ``shared_preload_libraries``
        on an existing server).
    """

    def __init__(self, dsn: str | None = None, pg_stats: bool = False):
        self._dsn = dsn
        self.pg_stats = pg_stats
        self._pg: TemporaryPostgres | None = None
        self._created: list[str] = []

    def __enter__(self) -> Server:
        if self._dsn is None:
            settings = {"shared_preload_libraries": "'pg_stat_statements'"} if self.pg_stats else {}
            self._pg = TemporaryPostgres(settings=settings).start()
            self._dsn = self._pg.dsn()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pg is not None:
            self._pg.stop()
        else:
            for name in self._created:
                with self._admin() as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self._dsn, autocommit=True)

    def dsn(self, dbname: str) -> str:
        """libpq DSN of a database on this server."""
        return make_conninfo(self._dsn, dbname=dbname)

    def url(self, dbname: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of a database on this server."""
        d = conninfo_to_dict(self._dsn)
        return URL.create(
            f"postgresql+{driver}",
            username=d.get("user"),
            password=d.get("password"),
            host=d.get("host"),
            port=int(d["port"]) if d.get("port") else None,
            database=dbname,
        ).render_as_string(hide_password=False)

    def create_database(self, name: str, driver: str = "psycopg") -> str:
        """Create an empty database (dropping a leftover one); return its URL."""
        with self._admin() as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        self._created.append(name)
        if self.pg_stats:
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return self.url(name, driver)

    def version(self) -> str:
        """Server version string."""
        with self._admin() as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def reset_stats(self) -> None:
        """Forget the statement statistics gathered so far (schema creation)."""
        if self.pg_stats and self._created:
            with psycopg.connect(self.dsn(self._created[0]), autocommit=True) as conn:
                conn.execute("SELECT pg_stat_statements_reset()")

    def top_statements(self, limit: int = 12) -> dict[str, list[dict]]:
        """The statements with the largest total execution time, per database."""
        out: dict[str, list[dict]] = {}
        if not self._created:
            return out
        query = """
            SELECT d.datname, s.calls, s.total_exec_time, s.rows, s.query
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = %s
            ORDER BY s.total_exec_time DESC LIMIT %s
        """
        with psycopg.connect(self.dsn(self._created[0]), autocommit=True) as conn:
            for name in self._created:
                rows = conn.execute(query, (name, limit)).fetchall()
                out[name] = [
                    {"calls": r[1], "total_ms": r[2], "rows": r[3], "query": r[4][:400]}
                    for r in rows
                ]
        return out
