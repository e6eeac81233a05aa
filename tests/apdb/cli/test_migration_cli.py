"""``apdb upgrade/downgrade --sql`` print SQL and never touch the database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from apdb import migrate
from apdb.cli import main

# Nothing listens on port 1: a command that tried to connect would fail.
UNREACHABLE_PG = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"


@pytest.mark.parametrize(
    ("args", "expected", "absent"),
    [
        (
            ["--dialect", "postgresql"],
            [
                'CREATE TABLE "DiaSource"',
                "GRANT SELECT ON",
                "SET lock_timeout = '1000ms'",
                "COMMIT;",
            ],
            [],
        ),
        (
            ["--dialect", "sqlite"],
            ['CREATE TABLE "DiaSource"', 'CREATE VIEW "DiaObjectLatest"'],
            ["GRANT", "lock_timeout"],
        ),
        ([UNREACHABLE_PG, "--lock-timeout", "250"], ["SET lock_timeout = '250ms'"], []),
    ],
)
def test_upgrade_sql_per_backend(args, expected, absent, capsys):
    assert main(["upgrade", "--sql", *args]) == 0
    out = capsys.readouterr().out
    assert 'INDEX "IDX_DiaSource_pixelId" ON "DiaSource" ("pixelId")' in out
    for text in expected:
        assert text in out
    for text in absent:
        assert text not in out


def test_sql_mode_leaves_the_database_untouched(tmp_path, capsys):
    missing = tmp_path / "never.sqlite3"
    assert main(["upgrade", f"sqlite:///{missing}", "0001", "--sql"]) == 0
    assert "Running upgrade  -> 0001" in capsys.readouterr().out
    assert not missing.exists()

    url = f"sqlite:///{tmp_path}/live.sqlite3"
    assert main(["create", url]) == 0
    head = migrate.head_revision()
    capsys.readouterr()
    assert main(["downgrade", url, "0001", "--sql"]) == 0
    out = capsys.readouterr().out
    assert 'DROP VIEW "DiaLightCurve"' in out
    assert main(["current", url]) == 0
    assert capsys.readouterr().out.strip() == f"{head} (head)"


@pytest.mark.postgres
def test_sql_mode_does_not_touch_postgres(postgres_url, capsys):
    assert main(["upgrade", postgres_url, "--sql"]) == 0
    assert 'CREATE TABLE "DiaObject"' in capsys.readouterr().out
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()


def test_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.delenv("APDB_URL", raising=False)
    cases = [
        (["upgrade", "--sql"], "give a database URL or --dialect"),
        (["upgrade", "--sql", "--dialect", "sqlite", "0099"], "unknown revision '0099'"),
        (["downgrade", "--sql", "--dialect", "sqlite"], "target revision of the downgrade"),
        (["downgrade", "--sql", "--dialect", "sqlite", "0001:0002"], "wrong way"),
        (["upgrade", "sqlite:///x.sqlite3", "--dialect", "sqlite"], "only applies with --sql"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
