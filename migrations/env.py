"""Alembic environment of the APDB, written for use as a library.

The target metadata is `apdb.schema.make_metadata`.  `apdb.migrate` passes
what to run on through ``config.attributes``:

- ``connection``: a live connection; migrations run inside the caller's
  transaction (``Apdb.create`` on an empty database, tests);
- ``engine``: an engine; alembic owns the transactions, one per revision
  (``transaction_per_migration``), so a revision's locks are released when
  it commits and ``autocommit_block`` (concurrent index builds, batched
  backfills) works.  This is how ``apdb upgrade``/``downgrade`` run on a
  live database;
- offline (``--sql``): ``dialect`` (``postgresql`` or ``sqlite``) or a URL,
  and ``output_buffer`` receiving the SQL; nothing connects.

On PostgreSQL every statement runs with a bounded ``lock_timeout``
(``lock_settings``; see `migrations.online`).  Run from the ``alembic``
command line, the URL comes from ``sqlalchemy.url`` or ``APDB_URL``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from apdb.schema import make_metadata

try:  # an installed wheel: this folder ships inside the package as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError as exc:  # a source checkout: the repository's migrations/
    if exc.name != "apdb.migrations":
        raise
    from migrations import online

config = context.config
namespace = config.attributes.get("namespace")
target_metadata = make_metadata(namespace)
lock = online.configure(**config.attributes.get("lock_settings", {}))


def _options(dialect: str) -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": dialect == "sqlite",
        "version_table_schema": namespace,
        "compare_type": True,
    }


def _set_lock_timeout(conn: sa.Connection, local: bool) -> None:
    if conn.dialect.name == "postgresql":
        scope = "LOCAL " if local else ""
        conn.exec_driver_sql(f"SET {scope}lock_timeout = '{int(lock.lock_timeout_ms)}ms'")
        if _has_citus(conn):
            # DDL on distributed tables and views in one transaction: Citus
            # needs one connection per node for it.
            conn.exec_driver_sql(f"SET {scope}citus.multi_shard_modify_mode TO 'sequential'")


def _has_citus(conn: sa.Connection) -> bool:
    query = sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
    return conn.execute(query).scalar() is not None


def run_migrations_offline() -> None:
    dialect = config.attributes.get("dialect")
    url = None
    if dialect is None:
        url = config.get_main_option("sqlalchemy.url") or os.environ["APDB_URL"]
        dialect = sa.make_url(url).get_backend_name()
    online.configure(online=False)
    context.configure(
        url=url,
        dialect_name=None if url else dialect,
        literal_binds=True,
        transaction_per_migration=True,
        **_options(dialect),
    )
    if dialect == "postgresql":
        context.execute(f"SET lock_timeout = '{int(lock.lock_timeout_ms)}ms'")
    with context.begin_transaction():
        context.run_migrations()


def _run_owned(conn: sa.Connection) -> None:
    """Alembic owns the transactions: one per revision, lock_timeout per session."""
    online.configure(online=True)
    _set_lock_timeout(conn, local=False)
    conn.commit()
    try:
        context.configure(
            connection=conn, transaction_per_migration=True, **_options(conn.dialect.name)
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        online.configure(online=False)
        if conn.dialect.name == "postgresql" and not conn.invalidated:
            conn.rollback()
            conn.exec_driver_sql("RESET lock_timeout")
            if _has_citus(conn):
                conn.exec_driver_sql("RESET citus.multi_shard_modify_mode")
            conn.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        online.configure(online=False)
        _set_lock_timeout(connection, local=True)
        context.configure(connection=connection, **_options(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = config.attributes.get("engine")
    owned = engine is None
    if owned:
        url = config.get_main_option("sqlalchemy.url") or os.environ["APDB_URL"]
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _run_owned(conn)
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
