"""Alembic migrations of an APDB, usable without an ini file.

The revisions live in the repository's ``migrations/`` folder, which the wheel
ships as ``apdb/migrations`` (see ``pyproject.toml`` and `script_location`),
so an installed package can migrate.

`upgrade`, `downgrade` and `stamp` take either

- a live SQLAlchemy `Connection`: ``migrations/env.py`` runs inside the
  caller's transaction (creating an empty database, tests), or
- an `Engine`: alembic owns the transactions, one per revision, so a live
  database is migrated online (bounded lock waits, concurrent index builds,
  batched backfills; see `migrations.online`), and a revision that could not
  get its locks is retried from where it stopped.

`sql_script` renders the SQL of a migration without connecting (alembic's
offline mode), for a DBA to review or run.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from apdb.errors import ApdbDatabaseError, ApdbError

__all__ = [
    "DIALECTS",
    "MigrationError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "history",
    "sql_script",
    "stamp",
    "upgrade",
]

VERSION_TABLE = "alembic_version"

DIALECTS: tuple[str, ...] = ("postgresql", "sqlite")
"""Backends whose migration SQL `sql_script` renders."""

# SQLSTATE of "lock_timeout expired".
_LOCK_NOT_AVAILABLE = "55P03"


class MigrationError(ApdbError):
    """A migration could not run (unknown revision, bad range, lock not obtained)."""


def script_location() -> Path:
    """Directory of the alembic environment and its revisions.

    An installed wheel carries them inside the package (``apdb/migrations``,
    copied there from the repository's ``migrations/`` folder when the wheel
    is built); a source checkout (editable install) uses that folder itself.

    Raises
    ------
    MigrationError
        Neither is present.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "migrations"
    if (packaged / "env.py").is_file() and (packaged / "versions").is_dir():
        _alias_packaged_helpers(packaged)
        return packaged
    repository = here.parent / "migrations"
    if (repository / "env.py").is_file() and (repository / "versions").is_dir():
        return repository
    raise MigrationError(f"no alembic environment in {packaged} or {repository}")


def _alias_packaged_helpers(folder: Path) -> None:
    """Let ``from migrations import online`` find the packaged helpers.

    ``env.py`` and the revisions are loaded by alembic from their paths, but
    they import the environment's helper modules (``online.py``, ...) as
    ``migrations.<name>``, the name they have in a source checkout.  In an
    installed wheel those modules are ``apdb.migrations.<name>``: register
    them under both names (the same module objects), unless a ``migrations``
    module is already loaded.
    """
    import importlib
    import sys

    if "migrations" in sys.modules:
        return
    sys.modules["migrations"] = importlib.import_module("apdb.migrations")
    for path in sorted(folder.glob("*.py")):
        if path.stem in ("__init__", "env"):  # env.py runs alembic when executed
            continue
        module = importlib.import_module(f"apdb.migrations.{path.stem}")
        sys.modules.setdefault(f"migrations.{path.stem}", module)


def alembic_config(
    connection: sa.Connection | sa.Engine | None = None,
    namespace: str | None = None,
    lock: dict[str, object] | None = None,
    output_buffer: io.StringIO | None = None,
) -> Config:
    """Build an alembic `Config` for the APDB migrations.

    Parameters
    ----------
    connection : `sqlalchemy.Connection` or `sqlalchemy.Engine`, optional
        Live connection ``env.py`` runs on (in its transaction), or an engine
        (alembic owns the transactions, one per revision).
    namespace : `str`, optional
        Database schema holding the tables.
    lock : `dict`, optional
        ``migrations.online.LockSettings`` fields (``lock_timeout_ms``, ``retries``).
    output_buffer : `io.StringIO`, optional
        Where offline mode writes the SQL.
    """
    cfg = Config(output_buffer=output_buffer)
    cfg.set_main_option("script_location", str(script_location()))
    if isinstance(connection, sa.Engine):
        cfg.attributes["engine"] = connection
        cfg.attributes["connection"] = None
    else:
        cfg.attributes["connection"] = connection
    cfg.attributes["namespace"] = namespace
    cfg.attributes["lock_settings"] = dict(lock or {})
    return cfg


def head_revision() -> str:
    """Return the newest revision of the migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection, namespace: str | None = None) -> str | None:
    """Return the revision recorded in the database (`None` if unversioned)."""
    ctx = MigrationContext.configure(
        connection, opts={"version_table_schema": namespace, "version_table": VERSION_TABLE}
    )
    return ctx.get_current_revision()


def upgrade(
    connection: sa.Connection | sa.Engine,
    revision: str = "head",
    namespace: str | None = None,
    lock: dict[str, object] | None = None,
    attempts: int = 3,
) -> None:
    """Upgrade the database to ``revision``.

    Parameters
    ----------
    connection : `sqlalchemy.Connection` or `sqlalchemy.Engine`
        A connection (run in its transaction) or an engine (online: one
        transaction per revision).
    revision : `str`
        Target revision.
    namespace : `str`, optional
        Database schema of the tables.
    lock : `dict`, optional
        Lock settings (``lock_timeout_ms``, ``retries``) of each step.
    attempts : `int`
        With an engine, how many times the whole command is run when a
        revision still timed out on a lock after its own retries; committed
        revisions are not rerun.
    """
    _run(command.upgrade, connection, revision, namespace, lock, attempts)


def downgrade(
    connection: sa.Connection | sa.Engine,
    revision: str,
    namespace: str | None = None,
    lock: dict[str, object] | None = None,
    attempts: int = 3,
) -> None:
    """Downgrade the database to ``revision`` (parameters as in `upgrade`)."""
    _run(command.downgrade, connection, revision, namespace, lock, attempts)


def stamp(
    connection: sa.Connection | sa.Engine, revision: str = "head", namespace: str | None = None
) -> None:
    """Record ``revision`` in the database without running migrations."""
    command.stamp(alembic_config(connection, namespace), revision)


def _run(step, connection, revision, namespace, lock, attempts) -> None:
    cfg = alembic_config(connection, namespace, lock)
    if not isinstance(connection, sa.Engine):
        step(cfg, revision)
        return
    for attempt in range(max(1, attempts)):
        try:
            step(cfg, revision)
            return
        except sa.exc.OperationalError as exc:
            timed_out = getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE
            if not timed_out:
                raise ApdbDatabaseError(f"migration failed: {exc.orig or exc}") from exc
            if attempt + 1 == max(1, attempts):
                raise MigrationError(
                    f"migration to {revision} could not get its locks ({exc.orig}); the "
                    f"revisions before it are committed: run it again when the load is lower, "
                    f"or raise --lock-timeout"
                ) from exc
            time.sleep(1.0)
        except CommandError as exc:
            raise MigrationError(str(exc)) from exc


def sql_script(
    direction: str,
    revision: str,
    dialect: str | None = None,
    url: str | None = None,
    namespace: str | None = None,
    lock: dict[str, object] | None = None,
) -> str:
    """Return the SQL of a migration without connecting (alembic offline mode).

    Parameters
    ----------
    direction : `str`
        ``"upgrade"`` or ``"downgrade"``.
    revision : `str`
        Target revision, or ``FROM:TO``.  An upgrade starts from ``base`` by
        default, a downgrade from ``head``.
    dialect : `str`, optional
        ``"postgresql"`` or ``"sqlite"``; taken from ``url`` if not given.
    url : `str`, optional
        Database URL (only its backend is used; nothing connects).
    namespace : `str`, optional
        Database schema of the tables.
    lock : `dict`, optional
        Lock settings rendered into the script (``lock_timeout_ms``).

    Raises
    ------
    MigrationError
        Unknown dialect or revision, or a range in the wrong direction.
    """
    if dialect is None:
        if url is None:
            raise MigrationError("give a database URL or --dialect to render SQL for")
        try:
            dialect = sa.make_url(url).get_backend_name()
        except sa.exc.ArgumentError as exc:
            raise MigrationError(f"invalid database URL {url!r}") from exc
    if dialect not in DIALECTS:
        raise MigrationError(f"unsupported dialect {dialect!r}; choose one of {DIALECTS}")
    if ":" not in revision:
        start = "base" if direction == "upgrade" else head_revision()
        revision = f"{start}:{revision}"
    start, _, end = revision.partition(":")
    _check_range(direction, start, end)
    buf = io.StringIO()
    cfg = alembic_config(None, namespace, lock, output_buffer=buf)
    cfg.attributes["dialect"] = dialect
    step = {"upgrade": command.upgrade, "downgrade": command.downgrade}[direction]
    try:
        step(cfg, revision, sql=True)
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
    return buf.getvalue()


def _check_range(direction: str, start: str, end: str) -> None:
    """Refuse unknown revisions and a range going the wrong way."""
    order = ["base"] + [r for r, _, _ in reversed(history())]
    aliases = {"head": order[-1], "heads": order[-1]}
    for rev in (start, end):
        if aliases.get(rev, rev) not in order:
            raise MigrationError(f"unknown revision {rev!r}; known: {', '.join(order)}")
    i, j = order.index(aliases.get(start, start)), order.index(aliases.get(end, end))
    if (direction == "upgrade" and j < i) or (direction == "downgrade" and j > i):
        raise MigrationError(f"{direction} from {start} to {end} goes the wrong way")


def history() -> list[tuple[str, str | None, str]]:
    """All revisions, newest first, as ``(revision, down_revision, message)``."""
    script = ScriptDirectory.from_config(alembic_config())
    out = []
    for rev in script.walk_revisions():
        down = rev.down_revision if isinstance(rev.down_revision, str) else None
        out.append((rev.revision, down, rev.doc or ""))
    return out
