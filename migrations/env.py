"""Alembic environment of the APDB, written for use as a library.

The target metadata is `apdb.schema.make_metadata`.  Callers pass a live
connection in ``config.attributes["connection"]`` (see `apdb.migrate`), so
no ini file is needed and migrations share the caller's transaction.  Run
from the ``alembic`` command line, the URL comes from ``sqlalchemy.url`` or
the ``APDB_URL`` environment variable.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from apdb.schema import make_metadata

config = context.config
namespace = config.attributes.get("namespace")
target_metadata = make_metadata(namespace)


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table_schema=namespace,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or os.environ["APDB_URL"]
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ["APDB_URL"]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
