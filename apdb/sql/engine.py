"""SQLAlchemy engines for the APDB backends (PostgreSQL and SQLite)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event

from apdb.config import ApdbConfig
from apdb.errors import ApdbConfigError

__all__ = ["WRITE", "make_engine"]

# Execution option marking a connection that will write: on SQLite its
# transaction starts with BEGIN IMMEDIATE, so two writers queue on the lock
# instead of failing half-way with "database is locked".
WRITE = "apdb_write"


def make_engine(config: ApdbConfig) -> sa.Engine:
    """Create the engine for ``config.db_url``.

    Raises
    ------
    ApdbConfigError
        Malformed URL or unsupported backend.
    """
    try:
        url = sa.make_url(config.db_url)
    except sa.exc.ArgumentError as exc:
        raise ApdbConfigError(f"invalid database URL {config.db_url!r}: {exc}") from exc
    conn = config.connection
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": conn.sqlite_timeout})
        _setup_sqlite(engine, in_memory=url.database in (None, "", ":memory:"))
        return engine
    if url.get_backend_name() == "postgresql":
        if url.get_driver_name() not in ("psycopg", ""):
            raise ApdbConfigError(
                f"PostgreSQL APDBs need the psycopg (3) driver: use 'postgresql+psycopg://', "
                f"not {url.drivername!r}"
            )
        url = url.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            url,
            pool_size=conn.pool_size,
            max_overflow=conn.max_overflow,
            pool_pre_ping=True,
            connect_args={"connect_timeout": int(conn.connect_timeout)},
        )
    raise ApdbConfigError(f"unsupported database backend {url.get_backend_name()!r}")


def _setup_sqlite(engine: sa.Engine, in_memory: bool) -> None:
    """Let us issue BEGIN ourselves (pysqlite's implicit transactions are off)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
