"""A throwaway Citus cluster (a coordinator and workers) for tests and benchmarks.

`TemporaryCitus` starts one `TemporaryPostgres` per node, all on free
localhost ports with Citus preloaded (``shared_preload_libraries = 'citus'``)
and two-phase commit enabled (``max_prepared_transactions``: a transaction
that wrote to several workers commits with 2PC).  `TemporaryCitus.create_database`
creates a database on every node, ``CREATE EXTENSION citus`` in each, then on
the coordinator registers itself (``citus_set_coordinator_host``) and the
workers (``citus_add_node``): the returned URL (the coordinator's) is a
ready Citus cluster.

Nodes talk to each other without SSL (``citus.node_conninfo``), which is fine
on localhost and saves CPU; like `TemporaryPostgres` the durability settings
are off: never use it for data you want to keep.  As root the servers run as
the ``postgres`` OS user.  Every node is stopped on every exit path (the
``with`` block, `TemporaryCitus.stop`, interpreter exit), also when starting
a later node failed.

Examples
--------
>>> with TemporaryCitus(workers=2) as cluster:  # doctest: +SKIP
...     url = cluster.create_database("apdb_test")
...     apdb = Apdb.create(ApdbConfig(db_url=url, backend="citus"))
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from apdb.errors import PostgresUnavailableError
from apdb.sql import server
from apdb.testing.postgres import TemporaryPostgres, _check_name, find_postgres_bin

__all__ = ["CitusUnavailableError", "TemporaryCitus", "citus_available"]

_CITUS_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "'citus'",
    "max_prepared_transactions": "100",
    # One Citus maintenance daemon per database holding the extension.
    "max_worker_processes": "64",
    "shared_buffers": "128MB",
    "citus.node_conninfo": "'sslmode=disable'",
    # Tests create many small databases: keep each node quiet.
    "citus.log_distributed_deadlock_detection": "off",
}


def _terminate(conn: psycopg.Connection, dbname: str) -> None:
    """End every session on ``dbname`` (Citus's maintenance daemon included)."""
    server.terminate_sessions(conn, dbname)


def _retry_in_use(
    conn: psycopg.Connection, statement: Callable[[psycopg.Connection], None], busy: str
) -> None:
    """Run CREATE/DROP DATABASE, ending sessions on ``busy`` while it is in use."""
    for attempt in range(100):
        _terminate(conn, busy)
        try:
            statement(conn)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 99:
                raise
            time.sleep(0.05)


class CitusUnavailableError(PostgresUnavailableError):
    """The Citus extension is not installed for the PostgreSQL server binaries."""


def citus_available(bin_dir: str | Path | None = None) -> bool:
    """Whether ``citus.so`` is installed for the server binaries.

    Parameters
    ----------
    bin_dir : `str` or `pathlib.Path`, optional
        Directory of the server binaries (found with `find_postgres_bin`).
    """
    found = Path(bin_dir) if bin_dir else find_postgres_bin()
    if found is None:
        return False
    return (found.parent / "lib" / "citus.so").exists()


class TemporaryCitus:
    """A Citus cluster of temporary servers: one coordinator and ``workers`` workers.

    Parameters
    ----------
    workers : `int`, optional
        Number of worker nodes.
    bin_dir : `str` or `pathlib.Path`, optional
        Directory of the PostgreSQL server binaries.
    settings : `dict` [`str`, `str`], optional
        Extra ``postgresql.conf`` settings of every node.
    base_dir : `str`, optional
        Parent of the nodes' temporary directories.

    Raises
    ------
    CitusUnavailableError
        Citus is not installed for these binaries (build it with
        ``.ci/build-citus``).
    PostgresUnavailableError
        No server binaries, or a node failed to start.
    """

    def __init__(
        self,
        workers: int = 2,
        bin_dir: str | Path | None = None,
        settings: dict[str, str] | None = None,
        base_dir: str | None = None,
    ):
        if workers < 1:
            raise ValueError("a Citus cluster needs at least one worker")
        found = Path(bin_dir) if bin_dir else find_postgres_bin()
        if found is None:
            raise PostgresUnavailableError("PostgreSQL server binaries not found")
        if not citus_available(found):
            raise CitusUnavailableError(
                f"Citus is not installed for {found} (no citus.so in {found.parent / 'lib'}); "
                f"build it with .ci/build-citus"
            )
        conf = {**_CITUS_SETTINGS, **(settings or {})}
        self.coordinator = TemporaryPostgres(bin_dir=found, settings=conf, base_dir=base_dir)
        self.workers = [
            TemporaryPostgres(bin_dir=found, settings=conf, base_dir=base_dir)
            for _ in range(workers)
        ]
        self._databases: list[str] = []
        self._dropper: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    @property
    def nodes(self) -> list[TemporaryPostgres]:
        """Every node, coordinator first."""
        return [self.coordinator, *self.workers]

    @property
    def running(self) -> bool:
        """Whether every node is running."""
        return all(node.running for node in self.nodes)

    def start(self) -> TemporaryCitus:
        """Start every node (stopping those already started if one fails)."""
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and delete its directory (idempotent)."""
        if self._dropper is not None:
            for future in self._pending:
                with contextlib.suppress(Exception):
                    future.result(timeout=60)
            self._dropper.shutdown(wait=True)
            self._dropper = None
            self._pending = []
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> TemporaryCitus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------
    def stop_worker(self, index: int, mode: str = "immediate") -> None:
        """Stop one worker's server (a crash with ``immediate``), keeping its data.

        Parameters
        ----------
        index : `int`
            Worker number (0-based).
        mode : `str`, optional
            ``pg_ctl stop`` mode: ``immediate`` (no shutdown checkpoint, like a
            crash), ``fast`` or ``smart``.
        """
        node = self.workers[index]
        node._run("pg_ctl", "stop", "-m", mode, "-w", "-t", "60", "-D", str(node.data_dir))

    def start_worker(self, index: int) -> None:
        """Start a worker stopped by `stop_worker` again, on the same port."""
        node = self.workers[index]
        node._requested_port = node.port
        node._start_server()

    # -- databases ---------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of a database on the coordinator."""
        return self.coordinator.url(dbname)

    def dsn(self, dbname: str = "postgres") -> str:
        """Libpq connection string of a database on the coordinator."""
        return self.coordinator.dsn(dbname)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a Citus database: on every node, with the workers registered.

        Parameters
        ----------
        name : `str`
            Database name (letters, digits, underscores).
        template : `str`, optional
            A database made with `make_template`: copied on every node at
            once (``STRATEGY FILE_COPY``).  The copy is a working cluster
            database: the coordinator's metadata names the workers by host
            and port, and each worker's copy holds the same shards.

        Returns
        -------
        url : `str`
            SQLAlchemy URL of the database on the coordinator.
        """
        if template is not None:
            return self._clone(name, template)
        created: list[TemporaryPostgres] = []
        try:
            for node in self.nodes:
                node.create_database(name)
                created.append(node)
                with psycopg.connect(node.dsn(name), autocommit=True) as conn:
                    server.enable_citus(conn)
            with psycopg.connect(self.coordinator.dsn(name), autocommit=True) as conn:
                server.set_citus_coordinator(conn, "127.0.0.1", self.coordinator.port)
                for worker in self.workers:
                    server.add_citus_worker(conn, "127.0.0.1", worker.port)
        except BaseException:
            for node in created:
                with contextlib.suppress(Exception):
                    node.drop_database(name)
            raise
        self._databases.append(name)
        return self.url(name)

    def make_template(self, name: str) -> None:
        """Make a Citus database a template: no connections allowed, on every node.

        Citus's maintenance daemon keeps a connection to each of its
        databases; it is terminated here and before each copy.
        """
        for node in self.nodes:
            with node._admin() as conn:
                server.forbid_connections(conn, _check_name(name))
                _terminate(conn, name)

    def _clone(self, name: str, template: str) -> str:
        name, template = _check_name(name), _check_name(template)

        def query(conn: psycopg.Connection) -> None:
            server.create_database(conn, name, template, file_copy=True)

        def copy(node: TemporaryPostgres) -> None:
            with node._admin() as conn:
                _retry_in_use(conn, query, template)

        try:
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(copy, self.nodes))
        except BaseException:
            self.drop_database(name)
            raise
        self._databases.append(name)
        return self.url(name)

    def drop_database(self, name: str, wait: bool = True) -> None:
        """Drop a database on every node (if it exists), closing its connections.

        Parameters
        ----------
        name : `str`
            Database name.
        wait : `bool`, optional
            If false, the drop runs in a background thread (tests drop their
            database this way: a drop can wait seconds for a checkpoint);
            `stop` waits for pending drops.
        """
        if not wait:
            if self._dropper is None:
                self._dropper = ThreadPoolExecutor(1, thread_name_prefix="citus-drop")
            self._pending.append(self._dropper.submit(self.drop_database, name))
            return
        name = _check_name(name)

        def query(conn: psycopg.Connection) -> None:
            server.drop_database(conn, name)

        def drop(node: TemporaryPostgres) -> None:
            if node.running:
                with node._admin() as conn:
                    _retry_in_use(conn, query, name)

        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(drop, self.nodes))
        if name in self._databases:
            self._databases.remove(name)

    def worker_rows(self, name: str, query: str | sql.Composable) -> list[list[tuple]]:
        """Run a read-only query directly on each worker's copy of a database.

        For tests that look at what each node holds (shards, prepared
        transactions): shard tables are visible by name
        (``citus.override_table_visibility`` off).  Returns one list of rows
        per worker.
        """
        out = []
        for worker in self.workers:
            with psycopg.connect(worker.dsn(name), autocommit=True) as conn:
                out.append(server.run_on_shards(conn, query))
        return out
