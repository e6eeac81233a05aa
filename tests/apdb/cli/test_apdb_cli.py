"""The ``apdb`` command line: each subcommand works, has help and is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from apdb.cli import SUBCOMMANDS, build_parser, main
from apdb.migrate import head_revision

CLI_DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def test_every_command_has_help_and_is_documented():
    parser = build_parser()
    text = CLI_DOC.read_text()
    for name, (_, help_text) in SUBCOMMANDS.items():
        assert help_text.strip()
        assert f"apdb {name}" in text, f"docs/cli.md does not show `apdb {name}`"
    assert parser.parse_args(["history"]).command == "history"


def test_create_current_info_downgrade_upgrade(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    config_file = tmp_path / "apdb.yaml"
    assert main(["create", url, "--write-config", str(config_file)]) == 0
    out = capsys.readouterr().out
    head = head_revision()
    assert f"schema revision {head}" in out and "DiaObject" in out
    assert config_file.exists()

    assert main(["current", url]) == 0
    assert capsys.readouterr().out.strip() == f"{head} (head)"

    assert main(["info", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "config:sky.index_order: 29" in out and "DiaSource" in out

    assert main(["downgrade", url, "0001"]) == 0
    assert f"{head} -> 0001" in capsys.readouterr().out
    # Opening a non-head database fails with a clear message and status 2.
    assert main(["info", url]) == 2
    assert "run `apdb upgrade`" in capsys.readouterr().err
    assert main(["upgrade", url]) == 0
    assert f"0001 -> {head}" in capsys.readouterr().out
    assert main(["history"]) == 0
    assert "base -> 0001" in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("APDB_URL", raising=False)
    assert main(["info"]) == 2
    assert "give a database URL" in capsys.readouterr().err
    assert main(["create", f"sqlite:///{tmp_path}/x.sqlite3"]) == 0
    assert main(["create", f"sqlite:///{tmp_path}/x.sqlite3"]) == 2
    assert "already holds an APDB" in capsys.readouterr().err
    assert main(["info", "mysql://nobody@nowhere/db"]) == 2
    with pytest.raises(SystemExit):
        main(["no-such-command"])


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("db_url: [\n", "invalid APDB config: expected the node content"),
        ("db_url: sqlite:///y.sqlite3\nbogus_key: 1\n", "bogus_key: Extra inputs"),
        ("replication: {enabled: maybe}\n", "replication.enabled: Input should be a valid boolean"),
        ("- a list\n", "expected a mapping of settings"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, config_text, expected):
    path = tmp_path / "apdb.yaml"
    path.write_text(config_text)
    assert main(["create", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not (tmp_path / "y.sqlite3").exists()


def test_bad_ids_and_unwritable_paths_are_one_line_errors(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/x.sqlite3"
    assert main(["create", url]) == 0
    capsys.readouterr()
    for argv, expected in [
        (["lightcurve", str(2**80), url], "does not fit a 64-bit integer"),
        (["lightcurve", "-5", url], "negative diaObjectId"),
        (["ppdb", "export-hats", url, str(tmp_path / "missing" / "sub" / "hats")], "Errno"),
    ]:
        if argv[0] == "ppdb":
            (tmp_path / "missing").write_text("a file, not a folder")
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert expected in err
