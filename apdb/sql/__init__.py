"""The SQL implementation of the APDB (PostgreSQL and SQLite): the only code that emits SQL."""

from apdb.sql.apdb_sql import ApdbSql

__all__ = ["ApdbSql"]
