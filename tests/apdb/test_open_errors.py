"""Opening what is not an APDB: our errors, one CLI line, and no file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apdb import Apdb
from apdb.cli import main
from apdb.errors import ApdbDatabaseError, ApdbError, ApdbNotFoundError

_NOT_A_DATABASE = b"this is a text file, not an SQLite database\n" * 200


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "missing.sqlite3"
    with pytest.raises(ApdbNotFoundError, match="does not exist, so it holds no APDB"):
        Apdb.from_url(f"sqlite:///{path}")
    assert _files(tmp_path) == []  # no database, no -wal/-shm files


def test_missing_directory_is_not_found(tmp_path):
    with pytest.raises(ApdbNotFoundError):
        Apdb.from_url(f"sqlite:///{tmp_path}/no/such/dir/apdb.sqlite3")
    assert _files(tmp_path) == []


def test_create_still_creates(tmp_path):
    path = tmp_path / "new.sqlite3"
    Apdb.create(f"sqlite:///{path}").close()
    with Apdb.from_url(f"sqlite:///{path}") as db:
        assert db.row_counts()["DiaObject"] == 0


def test_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.sqlite3"
    path.write_bytes(_NOT_A_DATABASE)
    with pytest.raises(ApdbDatabaseError, match="not an SQLite database") as info:
        Apdb.from_url(f"sqlite:///{path}")
    assert info.value.__cause__ is not None  # the driver's error is chained
    assert path.read_bytes() == _NOT_A_DATABASE
    assert _files(tmp_path) == ["notes.sqlite3"]
    with pytest.raises(ApdbError):
        Apdb.create(f"sqlite:///{path}")
    assert path.read_bytes() == _NOT_A_DATABASE


@pytest.mark.parametrize(
    "command",
    [
        ["lightcurve", "1"],
        ["info"],
        ["current"],
        ["upgrade"],
        ["downgrade", None, "0001"],
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("kind", ["missing", "not a database"])
def test_cli_reports_one_line_and_leaves_no_file(tmp_path, capsys, command, kind):
    path = tmp_path / "apdb.sqlite3"
    if kind == "not a database":
        path.write_bytes(_NOT_A_DATABASE)
    url = f"sqlite:///{path}"
    argv = [command[0], *command[1:], url] if None not in command else [command[0], url, "0001"]
    status = main(argv)
    captured = capsys.readouterr()
    assert status != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"apdb {command[0]}: error: ")
    expected = "does not exist" if kind == "missing" else "not an SQLite database"
    assert expected in lines[0]
    if kind == "missing":
        assert _files(tmp_path) == []
    else:
        assert path.read_bytes() == _NOT_A_DATABASE


def test_cli_process_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    path = tmp_path / "apdb.sqlite3"
    path.write_bytes(_NOT_A_DATABASE)
    for url in (f"sqlite:///{path}", f"sqlite:///{tmp_path}/missing.sqlite3"):
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "apdb"), "lightcurve", "7", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _files(tmp_path) == ["apdb.sqlite3"]
