"""Server-level statements on PostgreSQL: databases, and the nodes of a Citus cluster.

Used by the throwaway servers of `apdb.testing` (and by operators' scripts):
each function takes an autocommit psycopg connection (``CREATE DATABASE``
cannot run in a transaction) and composes identifiers with `psycopg.sql`,
values as bound parameters.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

__all__ = [
    "add_citus_worker",
    "create_database",
    "drop_database",
    "enable_citus",
    "forbid_connections",
    "list_databases",
    "run_on_shards",
    "set_citus_coordinator",
    "terminate_sessions",
]


def create_database(
    conn: psycopg.Connection, name: str, template: str | None = None, file_copy: bool = False
) -> None:
    """``CREATE DATABASE name [TEMPLATE template] [STRATEGY FILE_COPY]``.

    Parameters
    ----------
    conn : `psycopg.Connection`
        Autocommit connection to the server.
    name : `str`
        New database.
    template : `str`, optional
        Database to copy.
    file_copy : `bool`, optional
        Copy the template's files (``STRATEGY FILE_COPY``: one checkpoint,
        fast for small databases) instead of WAL-logging every block.

    Raises
    ------
    psycopg.errors.ObjectInUse
        The template has open sessions (callers may retry).
    """
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    if file_copy:
        query = sql.SQL("{} STRATEGY FILE_COPY").format(query)
    conn.execute(query)


def forbid_connections(conn: psycopg.Connection, name: str) -> None:
    """``ALTER DATABASE name WITH ALLOW_CONNECTIONS false`` (e.g. to make a template)."""
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
    )


def terminate_sessions(conn: psycopg.Connection, name: str) -> None:
    """End every other session on database ``name`` (background workers included)."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """Drop a database if it exists, closing its open connections."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def list_databases(conn: psycopg.Connection) -> list[str]:
    """Names of the non-template databases, sorted."""
    rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall()
    return sorted(r[0] for r in rows)


def enable_citus(conn: psycopg.Connection) -> None:
    """``CREATE EXTENSION citus`` in the connection's database."""
    conn.execute("CREATE EXTENSION citus")


def set_citus_coordinator(conn: psycopg.Connection, host: str, port: int) -> None:
    """Record where the coordinator of a Citus cluster listens (run on the coordinator)."""
    conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (host, int(port)))


def add_citus_worker(conn: psycopg.Connection, host: str, port: int) -> None:
    """Add a worker node to a Citus cluster (run on the coordinator)."""
    conn.execute("SELECT citus_add_node(%s, %s)", (host, int(port)))


def run_on_shards(conn: psycopg.Connection, query: str | sql.Composable) -> list[tuple]:
    """Run a read-only query on a Citus worker with its shard tables visible by name."""
    conn.execute("SET citus.override_table_visibility TO off")
    return conn.execute(query).fetchall()
