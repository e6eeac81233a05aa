"""SQLAlchemy engines for the APDB backends (PostgreSQL and SQLite)."""

from __future__ import annotations

import os
import urllib.parse

import sqlalchemy as sa
from sqlalchemy import event

from apdb.config import ApdbConfig
from apdb.errors import ApdbConfigError

__all__ = ["WRITE", "make_engine", "sqlite_path"]

# Execution option marking a connection that will write: on SQLite its
# transaction starts with BEGIN IMMEDIATE, so two writers queue on the lock
# instead of failing half-way with "database is locked".
WRITE = "apdb_write"


def make_engine(config: ApdbConfig, *, create: bool = False) -> sa.Engine:
    """Create the engine for ``config.db_url``.

    Parameters
    ----------
    config : `ApdbConfig`
        Configuration.
    create : `bool`, optional
        Whether a missing SQLite file may be created.  Without it an SQLite
        file is opened in SQLite's URI mode ``rw``: connecting to a file that
        does not exist fails instead of leaving an empty file behind.

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
        in_memory = url.database in (None, "", ":memory:")
        _setup_sqlite(engine, in_memory=in_memory)
        if not (in_memory or create or url.query.get("uri")):
            _open_existing_only(engine, url.database)
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


def sqlite_path(url: str | sa.URL) -> str | None:
    """Absolute path of an SQLite file URL; `None` for other URLs and memory."""
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.query.get("uri"):
        return None
    return os.path.abspath(url.database)


def _open_existing_only(engine: sa.Engine, database: str) -> None:
    """Connect with ``file:PATH?mode=rw`` (URI filenames): never create the file."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(database)) + "?mode=rw"

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams) -> None:
        cargs[:] = [uri]
        cparams["uri"] = True


def _setup_sqlite(engine: sa.Engine, in_memory: bool) -> None:
    """Let us issue BEGIN ourselves (pysqlite's implicit transactions are off)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        # A page cache of up to 128 MB (the default is 2 MB: a store's index updates and a
        # history read then go through the OS for every page) and memory-mapped reads.
        cur.execute("PRAGMA cache_size=-131072")
        cur.execute("PRAGMA mmap_size=268435456")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
