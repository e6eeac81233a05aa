"""`ApdbMetadataSql`: `apdb.metadata.ApdbMetadata` on the ``metadata`` table."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from apdb.errors import ApdbDatabaseError, ApdbError, FrozenMetadataError, MetadataExistsError
from apdb.metadata import ApdbMetadata, check_key, is_frozen
from apdb.sql.transaction import write_transaction

__all__ = ["ApdbMetadataSql"]


class ApdbMetadataSql(ApdbMetadata):
    """The ``metadata`` name/value table of an SQL APDB.

    Parameters
    ----------
    engine : `sqlalchemy.Engine`
        The APDB engine.
    table : `sqlalchemy.Table`
        The ``metadata`` table (columns ``name``, ``value``).
    """

    def __init__(self, engine: sa.Engine, table: sa.Table):
        self._engine = engine
        self._table = table

    def _read(self, what: str, stmt: sa.Executable) -> list[sa.Row]:
        try:
            with self._engine.connect() as conn:
                return list(conn.execute(stmt))
        except sa.exc.SQLAlchemyError as exc:
            raise _database_error(exc, what) from exc

    def get(self, key: str, default: str | None = None) -> str | None:
        """Return the value of ``key``, or ``default`` (see `ApdbMetadata.get`)."""
        check_key(key)
        t = self._table
        rows = self._read("metadata get", sa.select(t.c.value).where(t.c.name == key))
        return rows[0][0] if rows else default

    def set(self, key: str, value: str, *, force: bool = False) -> None:
        """Store ``value`` under ``key`` (see `ApdbMetadata.set`)."""
        check_key(key, value, check_value=True)
        if is_frozen(key):
            raise FrozenMetadataError(key, "set")
        t = self._table

        def work(conn: sa.Connection) -> None:
            found = conn.execute(sa.select(t.c.value).where(t.c.name == key)).first()
            if found is None:
                # A concurrent insert of the same key is a unique violation:
                # write_transaction reruns this, which then sees the key.
                conn.execute(sa.insert(t).values(name=key, value=value))
            elif force:
                conn.execute(sa.update(t).where(t.c.name == key).values(value=value))
            else:
                raise MetadataExistsError(key)

        write_transaction(self._engine, work, what=f"metadata set {key!r}")

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (see `ApdbMetadata.delete`)."""
        check_key(key)
        if is_frozen(key):
            raise FrozenMetadataError(key, "delete")
        t = self._table

        def work(conn: sa.Connection) -> bool:
            return conn.execute(sa.delete(t).where(t.c.name == key)).rowcount > 0

        return write_transaction(self._engine, work, what=f"metadata delete {key!r}")

    def items(self) -> Iterator[tuple[str, str]]:
        """Iterate over ``(key, value)`` pairs in key order."""
        t = self._table
        rows = self._read("metadata items", sa.select(t.c.name, t.c.value).order_by(t.c.name))
        return iter([(r[0], r[1]) for r in rows])

    def empty(self) -> bool:
        """Whether the table holds no key (`True` when it is missing)."""
        try:
            with self._engine.connect() as conn:
                if not sa.inspect(conn).has_table(self._table.name, schema=self._table.schema):
                    return True
                return conn.execute(sa.select(self._table.c.name).limit(1)).first() is None
        except sa.exc.SQLAlchemyError as exc:
            raise _database_error(exc, "metadata empty") from exc


def _database_error(exc: BaseException, what: str) -> ApdbError:
    """Translate a driver error (the shared translator when present)."""
    try:
        from apdb.sql.errors_map import database_error
    except ImportError:  # pragma: no cover - before the translator existed
        return ApdbDatabaseError(f"{what} failed: {exc}")
    return database_error(exc, what)
