"""A throwaway PostgreSQL server for tests and benchmarks.

`TemporaryPostgres` runs ``initdb`` into a temporary directory and starts a
server on a unix socket inside it and on a free localhost TCP port, with the
durability settings switched off (``fsync``, ``synchronous_commit``,
``full_page_writes``): never use it for data you want to keep.  PostgreSQL
refuses to run as root, so when the current user is root the server runs as
the ``postgres`` OS user (through ``runuser``) in a directory that user owns.

The server is stopped on every exit path: leaving the ``with`` block, calling
`TemporaryPostgres.stop`, or interpreter exit (``atexit``).

Examples
--------
>>> with TemporaryPostgres() as pg:  # doctest: +SKIP
...     url = pg.create_database("apdb_test")
...     engine = sqlalchemy.create_engine(url)
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import psycopg

from apdb.errors import PostgresUnavailableError
from apdb.sql import server

__all__ = ["TemporaryPostgres", "find_postgres_bin"]

_DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "256MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
}

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def find_postgres_bin() -> Path | None:
    """Find the directory of the PostgreSQL server binaries.

    Looks at ``$APDB_PG_BIN``, then the newest ``/usr/lib/postgresql/*/bin``,
    then ``initdb`` on ``PATH``.

    Returns
    -------
    bin_dir : `pathlib.Path` or `None`
        Directory holding ``initdb``, ``pg_ctl`` and ``postgres``; `None` when
        none is installed.
    """
    env = os.environ.get("APDB_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid database name {name!r}")
    return name


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory, removed when stopped.

    Parameters
    ----------
    bin_dir : `str` or `pathlib.Path`, optional
        Directory of ``initdb``/``pg_ctl``; found with `find_postgres_bin`
        when not given.
    port : `int`, optional
        TCP port on 127.0.0.1; a free one is picked when not given.
    settings : `dict` [`str`, `str`], optional
        Extra ``postgresql.conf`` settings (override the defaults).
    base_dir : `str`, optional
        Parent of the temporary directory (default: the system temp dir).

    Raises
    ------
    PostgresUnavailableError
        No server binaries, or the server failed to start.
    """

    def __init__(
        self,
        bin_dir: str | Path | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        base_dir: str | None = None,
    ):
        found = Path(bin_dir) if bin_dir else find_postgres_bin()
        if found is None or not (found / "initdb").exists():
            raise PostgresUnavailableError(
                "PostgreSQL server binaries not found (looked in $APDB_PG_BIN, "
                "/usr/lib/postgresql/*/bin and PATH); install them, e.g. "
                "`apt-get install -y postgresql`"
            )
        self.bin_dir = found
        self._requested_port = port
        self.port: int = 0
        self.settings = {**_DEFAULT_SETTINGS, **(settings or {})}
        self._base_dir = base_dir
        self.tmpdir: Path | None = None
        self._running = False
        self._as_root = os.geteuid() == 0
        self._finalizer: weakref.finalize | None = None

    # -- paths ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self.tmpdir is not None
        return self.tmpdir / "data"

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's unix socket."""
        assert self.tmpdir is not None
        return self.tmpdir / "sock"

    @property
    def log_file(self) -> Path:
        """The server log."""
        assert self.tmpdir is not None
        return self.tmpdir / "server.log"

    @property
    def running(self) -> bool:
        """Whether the server has been started and not stopped."""
        return self._running

    # -- process control -------------------------------------------------------
    def _cmd(self, *args: str) -> list[str]:
        return _command(self.bin_dir, self._as_root, *args)

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            self._cmd(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.tmpdir,
        )
        if proc.returncode != 0:
            log = ""
            if self.log_file.exists():
                log = self.log_file.read_text(errors="replace")[-3000:]
            raise PostgresUnavailableError(
                f"{args[0]} failed ({proc.returncode}): {proc.stdout.strip()}\n{log}"
            )

    def start(self) -> TemporaryPostgres:
        """Create the cluster and start the server.

        Returns
        -------
        self : `TemporaryPostgres`
        """
        if self._running:
            return self
        self.tmpdir = Path(tempfile.mkdtemp(prefix="apdb-pg-", dir=self._base_dir))
        os.chmod(self.tmpdir, 0o755)
        self.socket_dir.mkdir()
        if self._as_root:
            shutil.chown(self.tmpdir, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self._start_server()
        except BaseException:
            self._cleanup_dir()
            raise
        self._running = True
        self._finalizer = weakref.finalize(
            self, _stop_server, self.bin_dir, self._as_root, self.data_dir, self.tmpdir
        )
        atexit.register(self._finalizer)
        return self

    def _start_server(self) -> None:
        attempts = 1 if self._requested_port else 5
        last: Exception | None = None
        for _ in range(attempts):
            self.port = self._requested_port or _free_port()
            conf = dict(self.settings)
            conf.update(
                port=str(self.port),
                listen_addresses="'127.0.0.1'",
                unix_socket_directories=f"'{self.socket_dir}'",
            )
            auto = self.data_dir / "postgresql.auto.conf"
            text = "".join(f"{k} = {v}\n" for k, v in conf.items())
            auto.write_text(text)
            if self._as_root:
                shutil.chown(auto, "postgres", "postgres")
            try:
                self._run(
                    "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                    "-l", str(self.log_file),
                )  # fmt: skip
                return
            except PostgresUnavailableError as exc:
                last = exc
                time.sleep(0.2)
        assert last is not None
        raise last

    def stop(self) -> None:
        """Stop the server and delete its directory (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
            atexit.unregister(self._finalizer)
            self._finalizer = None
        self._running = False

    def _cleanup_dir(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------
    def url(self, dbname: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL of a database on this server.

        Parameters
        ----------
        dbname : `str`, optional
            Database name.
        driver : `str`, optional
            SQLAlchemy driver name (``psycopg`` or ``psycopg2``).
        """
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """Return a libpq connection string (for psycopg) of a database on this server."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def _admin(self) -> psycopg.Connection:
        if not self._running:
            raise PostgresUnavailableError("the temporary PostgreSQL server is not running")
        return psycopg.connect(self.dsn(), autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database, optionally as a copy of a template database.

        Parameters
        ----------
        name : `str`
            New database name (letters, digits, underscores).
        template : `str`, optional
            Database to copy; it must have no open connections.

        Returns
        -------
        url : `str`
            SQLAlchemy URL of the new database.
        """
        name = _check_name(name)
        template = None if template is None else _check_name(template)
        with self._admin() as conn:
            for attempt in range(20):
                try:
                    server.create_database(conn, name, template)
                    break
                except psycopg.errors.ObjectInUse:
                    # A just-closed session on the template may still be exiting.
                    if attempt == 19:
                        raise
                    time.sleep(0.1)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, closing its open connections."""
        with self._admin() as conn:
            server.drop_database(conn, _check_name(name))

    def list_databases(self) -> list[str]:
        """Names of the non-template databases on this server."""
        with self._admin() as conn:
            return server.list_databases(conn)


def _command(bin_dir: Path, as_root: bool, *args: str) -> list[str]:
    """Command line running a server binary (as the ``postgres`` user when root)."""
    cmd = [str(bin_dir / args[0]), *args[1:]]
    if as_root:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _stop_server(bin_dir: Path, as_root: bool, data_dir: Path, tmpdir: Path) -> None:
    """Stop a server and remove its directory; safe to call more than once."""
    with contextlib.suppress(Exception):
        if (data_dir / "postmaster.pid").exists():
            subprocess.run(
                _command(
                    bin_dir,
                    as_root,
                    "pg_ctl",
                    "stop",
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "-D",
                    str(data_dir),
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
    shutil.rmtree(tmpdir, ignore_errors=True)
