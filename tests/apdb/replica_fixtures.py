"""Helpers of the replication tests: empty databases for PPDBs, replication configs.

The APDBs themselves come from the shared ``replica_apdb_url`` fixture
(tests/conftest.py: SQLite, PostgreSQL and Citus).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from apdb import ApdbConfig
from apdb.config import ReplicationConfig

_counter = itertools.count()

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgres``: where a PPDB next to the APDB at ``url`` goes.

    A Citus APDB replicates into a plain PostgreSQL PPDB.
    """
    return "sqlite" if url.startswith("sqlite") else "postgres"


def fresh_url(request: pytest.FixtureRequest, tmp_path, backend: str, stem: str) -> Iterator[str]:
    """URL of an empty database (no schema) on ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / (stem + '.sqlite3')}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"{stem}_{os.getpid()}_{next(_counter)}"
    url = server.create_database(name)
    yield url
    server.drop_database(name)


def replica_config(url: str, chunk_seconds: int = 1) -> ApdbConfig:
    """Config of an APDB with replication enabled."""
    return ApdbConfig(
        db_url=url, replication=ReplicationConfig(enabled=True, chunk_seconds=chunk_seconds)
    )
