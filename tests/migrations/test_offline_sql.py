"""Offline SQL (``apdb upgrade --sql``): rendered without a database, and it builds the schema.

The scripts are checked by running them: the PostgreSQL script statement by
statement through psycopg (as ``psql`` would), the SQLite one with
``executescript``; the result must equal `apdb.schema` (alembic's
autogenerate comparison finds nothing) and be stamped at head.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from apdb import migrate
from apdb.migrate import MigrationError
from apdb.schema import metadata


def _statements(script: str) -> list[str]:
    """Split alembic's offline output (statements end with ';' and a blank line)."""
    parts = [p.strip() for p in script.split(";\n\n")]
    out = []
    for part in parts:
        lines = [ln for ln in part.splitlines() if not ln.startswith("--")]
        text = "\n".join(lines).strip().rstrip(";")
        if text:
            out.append(text)
    return out


def _diff(conn: sa.Connection) -> list:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(ctx, metadata)


@pytest.mark.postgres
def test_postgres_script_builds_the_head_schema(postgres_url):
    script = migrate.sql_script("upgrade", "head", dialect="postgresql")
    assert script.startswith("SET lock_timeout = '1000ms'")
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        for stmt in _statements(script):
            conn.execute(stmt)
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert _diff(conn) == []
        assert {"DiaObjectLatest", "DiaLightCurve"} <= set(sa.inspect(conn).get_view_names())
    engine.dispose()


@pytest.mark.postgres
def test_postgres_downgrade_script_undoes_the_upgrade(postgres_url):
    up = migrate.sql_script("upgrade", "head", dialect="postgresql")
    down = migrate.sql_script("downgrade", "0001", dialect="postgresql")
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        for stmt in _statements(up) + _statements(down):
            conn.execute(stmt)
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        views = conn.execute("SELECT count(*) FROM pg_views WHERE schemaname = 'public'")
        n_views = views.fetchone()[0]
    assert version == "0001"
    assert n_views == 0


def test_sqlite_script_builds_the_head_schema(tmp_path):
    script = migrate.sql_script("upgrade", "head", url="sqlite:///ignored.sqlite3")
    path = tmp_path / "from_script.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(script)
    assert not (tmp_path / "ignored.sqlite3").exists()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert _diff(conn) == []
    engine.dispose()


def test_ranges_and_directions():
    head = migrate.head_revision()
    step = migrate.sql_script("upgrade", "0001:0002", dialect="postgresql")
    assert 'CREATE VIEW "DiaObjectLatest"' in step
    assert 'CREATE TABLE "DiaSource"' not in step
    down = migrate.sql_script("downgrade", "0001", dialect="sqlite")
    assert f"Running downgrade {head} -> " in down
    # Only tables rebuilt on the way down are created (0006: the chunk key tables).
    created = {line.split('"')[1] for line in down.splitlines() if line.startswith("CREATE")}
    assert 'DROP VIEW "DiaObjectLatest"' in down and created == {
        f"{t}_0006" for t in ("DiaObjectChunks", "DiaSourceChunks", "DiaForcedSourceChunks")
    }
    with pytest.raises(MigrationError, match="wrong way"):
        migrate.sql_script("upgrade", "0002:0001", dialect="sqlite")
    with pytest.raises(MigrationError, match="unknown revision '0099'"):
        migrate.sql_script("upgrade", "0099", dialect="sqlite")
    with pytest.raises(MigrationError, match="unsupported dialect"):
        migrate.sql_script("upgrade", "head", dialect="mysql")
    with pytest.raises(MigrationError, match="URL or --dialect"):
        migrate.sql_script("upgrade", "head")
