"""Helpers for tests and benchmarks (a throwaway PostgreSQL server)."""

from apdb.testing.postgres import TemporaryPostgres, find_postgres_bin

__all__ = ["TemporaryPostgres", "find_postgres_bin"]
