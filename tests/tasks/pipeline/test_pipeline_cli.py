"""The pipeline's command line: parsing and argument errors (the runs are in the e2e tests)."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.cli import build_parser, main


def test_run_and_demo_are_registered_with_help(capsys):
    parser = build_parser()
    for command in ("run", "demo"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([command, "--help"])
        assert exc.value.code == 0
        assert "--" in capsys.readouterr().out
    args = parser.parse_args(["run", "data"])
    assert args.apdb_url == "sqlite:///apdb.sqlite3" and args.visit is None


def test_run_refuses_a_missing_directory(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_run_refuses_an_unreachable_database(tmp_path, capsys):
    # a directory that passes `check` (files are not opened before the APDB is)
    from tasks.data.layout import DataLayout, visit_info_to_row
    from tasks.simulate.quick import make_visit_info

    layout = DataLayout(tmp_path)
    layout.write_visit_table(pd.DataFrame([visit_info_to_row(make_visit_info(visit_id=1))]))
    for path in (layout.exposure_path(1, 0), layout.deep_coadd_path(0, 0, "r")):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'apdb.sqlite3'}"
    assert main(["run", str(tmp_path), "--apdb-url", url, "--no-progress"]) == 2
    assert "cannot open the APDB" in capsys.readouterr().err


def test_demo_writes_outside_the_current_directory_by_default(tmp_path, monkeypatch):
    from tasks.pipeline.demo import default_output

    monkeypatch.delenv("APDB_PIPELINE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_output() == tmp_path / "home" / ".cache" / "apdb-pipeline" / "demo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_output() == tmp_path / "xdg" / "apdb-pipeline" / "demo"
    monkeypatch.setenv("APDB_PIPELINE_DATA", str(tmp_path / "data"))
    assert default_output() == tmp_path / "data" / "demo"
    args = build_parser().parse_args(["demo"])
    assert args.output is None  # resolved to default_output() when the demo runs
    args = build_parser().parse_args(["demo", "--output", str(tmp_path / "here")])
    assert args.output == tmp_path / "here"
    assert build_parser().parse_args(["demo", "--workdir", "x"]).output.name == "x"
