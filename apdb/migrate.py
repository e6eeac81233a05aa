"""Alembic migrations of an APDB, usable without an ini file.

The revisions live in the top-level ``migrations`` package, which is installed
with ``apdb`` (see ``pyproject.toml``), so an installed package can migrate.
Every function takes a live SQLAlchemy `Connection`; ``migrations/env.py``
runs inside the caller's transaction.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "history",
    "stamp",
    "upgrade",
]

VERSION_TABLE = "alembic_version"


def script_location() -> Path:
    """Directory of the alembic environment (the ``migrations`` package)."""
    import migrations

    return Path(migrations.__file__).parent


def alembic_config(connection: sa.Connection | None = None, namespace: str | None = None) -> Config:
    """Build an alembic `Config` for the APDB migrations.

    Parameters
    ----------
    connection : `sqlalchemy.Connection`, optional
        Live connection ``env.py`` runs on.
    namespace : `str`, optional
        Database schema holding the tables.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["connection"] = connection
    cfg.attributes["namespace"] = namespace
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
    connection: sa.Connection, revision: str = "head", namespace: str | None = None
) -> None:
    """Upgrade the database to ``revision``."""
    command.upgrade(alembic_config(connection, namespace), revision)


def downgrade(connection: sa.Connection, revision: str, namespace: str | None = None) -> None:
    """Downgrade the database to ``revision``."""
    command.downgrade(alembic_config(connection, namespace), revision)


def stamp(connection: sa.Connection, revision: str = "head", namespace: str | None = None) -> None:
    """Record ``revision`` in the database without running migrations."""
    command.stamp(alembic_config(connection, namespace), revision)


def history() -> list[tuple[str, str | None, str]]:
    """All revisions, newest first, as ``(revision, down_revision, message)``."""
    script = ScriptDirectory.from_config(alembic_config())
    out = []
    for rev in script.walk_revisions():
        down = rev.down_revision if isinstance(rev.down_revision, str) else None
        out.append((rev.revision, down, rev.doc or ""))
    return out
