"""Shared fixtures: APDB databases on SQLite and on a throwaway PostgreSQL.

Fixtures for everyone:

- ``apdb_url``: URL of a fresh, empty APDB at the head revision; parametrised
  over ``sqlite`` (a file in ``tmp_path``), ``postgres`` (a clone of a
  template database) and ``citus`` (a clone, on the coordinator and both
  workers at once, of a template Citus APDB with 8 shards per distributed
  table), so a test using it runs on every backend.
- ``server_apdb_url``: the same on PostgreSQL and Citus only (behaviour that
  exists only on a server, e.g. its lock table or roles).
- ``replica_apdb_url``: as ``apdb_url``, an APDB created with replication
  enabled (1 s replica chunks: `REPLICA_CHUNK_SECONDS`).
- ``apdb``: an opened `apdb.Apdb` on ``apdb_url`` (closed afterwards).
- ``postgres_url``: URL of a fresh, *empty* PostgreSQL database (no schema).
- ``postgres_server``: the session's `apdb.testing.TemporaryPostgres`.

Without PostgreSQL binaries (or Citus: ``.ci/build-citus``) the Postgres
(Citus) cases skip, except when the environment variable ``CI`` is set: then
they fail.  ``-m "not citus"`` leaves the Citus cases out.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator

import pytest

from apdb import Apdb, ApdbConfig
from apdb.config import CitusConfig, ReplicationConfig
from apdb.testing import TemporaryPostgres, find_postgres_bin
from apdb.testing.citus import TemporaryCitus, citus_available

_TEMPLATE_DB = "apdb_template"
_CITUS_TEMPLATE_DB = "apdb_citus_template"
REPLICA_CHUNK_SECONDS = 1
_REPLICATION = ReplicationConfig(enabled=True, chunk_seconds=REPLICA_CHUNK_SECONDS)
_counter = itertools.count()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    """A PostgreSQL server for the whole test session."""
    if find_postgres_bin() is None:
        message = "PostgreSQL server binaries not found (apt-get install -y postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; Postgres tests may not skip in CI", pytrace=False)
        pytest.skip(message)
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[TemporaryCitus]:
    """A Citus cluster (coordinator + 2 workers) for the whole test session."""
    if find_postgres_bin() is None or not citus_available():
        message = "Citus for PostgreSQL not installed (build it with .ci/build-citus)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; Citus tests may not skip in CI", pytrace=False)
        pytest.skip(message)
    with TemporaryCitus(workers=2) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_template(postgres_server: TemporaryPostgres) -> str:
    """Name of a template database holding an empty APDB at head."""
    url = postgres_server.create_database(_TEMPLATE_DB)
    Apdb.create(url).close()
    return _TEMPLATE_DB


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of an SQLite file holding an empty APDB at head."""
    path = tmp_path_factory.mktemp("apdb_template") / "template.sqlite3"
    Apdb.create(f"sqlite:///{path}").close()
    return str(path)


@pytest.fixture
def postgres_url(postgres_server: TemporaryPostgres) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    name = _unique_name("empty")
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def citus_template(citus_cluster: TemporaryCitus) -> str:
    """Name of a template database (on every node) holding an empty Citus APDB at head."""
    url = citus_cluster.create_database(_CITUS_TEMPLATE_DB)
    config = ApdbConfig(db_url=url, backend="citus", citus=CitusConfig(shard_count=8))
    Apdb.create(config).close()
    citus_cluster.make_template(_CITUS_TEMPLATE_DB)
    return _CITUS_TEMPLATE_DB


@pytest.fixture(scope="session")
def sqlite_replica_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """As ``sqlite_template``, with replication enabled."""
    path = tmp_path_factory.mktemp("apdb_template") / "replica.sqlite3"
    Apdb.create(ApdbConfig(db_url=f"sqlite:///{path}", replication=_REPLICATION)).close()
    return str(path)


@pytest.fixture(scope="session")
def postgres_replica_template(postgres_server: TemporaryPostgres) -> str:
    """As ``postgres_template``, with replication enabled."""
    url = postgres_server.create_database(_TEMPLATE_DB + "_replica")
    Apdb.create(ApdbConfig(db_url=url, replication=_REPLICATION)).close()
    return _TEMPLATE_DB + "_replica"


@pytest.fixture(scope="session")
def citus_replica_template(citus_cluster: TemporaryCitus) -> str:
    """As ``citus_template``, with replication enabled."""
    name = _CITUS_TEMPLATE_DB + "_replica"
    url = citus_cluster.create_database(name)
    config = ApdbConfig(
        db_url=url, backend="citus", citus=CitusConfig(shard_count=8), replication=_REPLICATION
    )
    Apdb.create(config).close()
    citus_cluster.make_template(name)
    return name


def _fresh_apdb(
    request: pytest.FixtureRequest, backend: str, tmp_path, replica: bool = False
) -> Iterator[str]:
    """Yield the URL of a fresh APDB at head on ``backend`` and drop it afterwards."""
    kind = "_replica" if replica else ""
    if backend == "citus":
        cluster: TemporaryCitus = request.getfixturevalue("citus_cluster")
        template = request.getfixturevalue(f"citus{kind}_template")
        name = _unique_name("citus")
        url = cluster.create_database(name, template=template)
        yield url
        cluster.drop_database(name, wait=False)
        return
    if backend == "sqlite":
        path = tmp_path / "apdb.sqlite3"
        shutil.copyfile(request.getfixturevalue(f"sqlite{kind}_template"), path)
        yield f"sqlite:///{path}"
        return
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue(f"postgres{kind}_template")
    name = _unique_name("apdb")
    url = server.create_database(name, template=template)
    yield url
    server.drop_database(name)


_SERVER_BACKENDS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("citus", marks=[pytest.mark.postgres, pytest.mark.citus]),
]


@pytest.fixture(params=["sqlite", *_SERVER_BACKENDS])
def apdb_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of a fresh, empty APDB at head, on SQLite, PostgreSQL and Citus."""
    yield from _fresh_apdb(request, request.param, tmp_path)


@pytest.fixture(params=_SERVER_BACKENDS)
def server_apdb_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """As ``apdb_url``, on the server backends only (PostgreSQL and Citus)."""
    yield from _fresh_apdb(request, request.param, tmp_path)


@pytest.fixture
def apdb(apdb_url: str) -> Iterator[Apdb]:
    """An opened APDB on each backend."""
    db = Apdb.from_url(apdb_url)
    yield db
    db.close()


@pytest.fixture(params=["sqlite", *_SERVER_BACKENDS])
def replica_apdb_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """As ``apdb_url``, an APDB created with replication enabled (1 s chunks)."""
    yield from _fresh_apdb(request, request.param, tmp_path, replica=True)
