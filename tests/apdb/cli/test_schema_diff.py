"""``apdb schema diff``: differences with a modified apdb.yaml become a loadable, runnable draft."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.script import ScriptDirectory

from apdb import Apdb, migrate
from apdb.cli import main
from apdb.schema_diff import installed_sdm_path

pytest.importorskip("lsst.sdm.schemas")


def _modified_yaml(tmp_path):
    """Installed apdb.yaml with a column added, a type widened, a length widened, one removed."""
    doc = yaml.safe_load(installed_sdm_path().read_text())
    doc["version"] = "10.1.0-test"
    tables = {t["name"]: t for t in doc["tables"]}
    source = tables["DiaSource"]["columns"]
    source.append({"name": "fancyFlux", "datatype": "float", "description": "new"})
    source.append({"name": "fancyCount", "datatype": "int", "nullable": False})
    for col in source:
        if col["name"] == "psfFlux":
            col["datatype"] = "double"
        if col["name"] == "reliabilityVersion":
            col["length"] = 16
    obj = tables["DiaObject"]["columns"]
    tables["DiaObject"]["columns"] = [c for c in obj if c["name"] != "u_fpFluxMean"]
    path = tmp_path / "apdb.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _script_copy(tmp_path, draft):
    """The alembic environment with the draft added to its versions."""
    location = tmp_path / "migrations"
    shutil.copytree(
        migrate.script_location(), location, ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(draft, location / "versions" / draft.name)
    return location


def _columns(url: str) -> dict[str, sa.types.TypeEngine]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        cols = {c["name"]: c for c in sa.inspect(conn).get_columns("DiaSource")}
    engine.dispose()
    return cols


def test_diff_writes_a_draft_that_alembic_loads_and_runs(apdb_url, tmp_path, capsys):
    yaml_path = _modified_yaml(tmp_path)
    out_dir = tmp_path / "drafts"
    out_dir.mkdir()
    assert main(["schema", "diff", "--sdm-yaml", str(yaml_path), "--output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    head = migrate.head_revision()
    new = f"{int(head) + 1:04d}"
    assert "new column      DiaSource.fancyFlux float" in out
    assert "new column      DiaSource.fancyCount int" in out
    assert "changed column  DiaSource.psfFlux float -> double" in out
    assert "changed column  DiaSource.reliabilityVersion string(7) -> string(16)" in out
    assert "removed column  DiaObject.u_fpFluxMean" in out
    drafts = list(out_dir.iterdir())
    assert [d.name for d in drafts] == [f"{new}_sdm_10_1_0-test.py"]
    text = drafts[0].read_text()
    compile(text, str(drafts[0]), "exec")
    assert "#   DiaObject.u_fpFluxMean (float NULL)" in text
    assert "drop_column_online('DiaObject'" not in text
    assert "NOT NULL in apdb.yaml: added nullable" in text

    location = _script_copy(tmp_path, drafts[0])
    script = ScriptDirectory(str(location))
    assert script.get_current_head() == new
    assert script.get_revision(new).down_revision == head

    # Run it on the database (at head) and back.
    cfg = migrate.alembic_config()
    cfg.set_main_option("script_location", str(location))
    engine = sa.create_engine(apdb_url, poolclass=sa.pool.NullPool)
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, new)
    cols = _columns(apdb_url)
    assert isinstance(cols["psfFlux"]["type"], sa.Double | sa.FLOAT)
    assert cols["reliabilityVersion"]["type"].length == 16
    assert cols["fancyFlux"]["nullable"] and cols["fancyCount"]["nullable"]
    command.downgrade(cfg, head)
    engine.dispose()
    cols = _columns(apdb_url)
    assert "fancyFlux" not in cols and "fancyCount" not in cols
    assert isinstance(cols["psfFlux"]["type"], sa.REAL)
    assert cols["reliabilityVersion"]["type"].length == 7
    # The database is at head again and opens.
    Apdb.from_url(apdb_url).close()


def test_no_differences_no_draft_and_errors(tmp_path, capsys):
    assert main(["schema", "diff", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no column differences: no draft written" in out
    assert "table not in the APDB  DiaObjectLast" in out
    assert list(tmp_path.iterdir()) == []

    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a mapping\n")
    cases = [
        (["--sdm-version", "0.0.1"], "apdb.yaml version"),
        (["--sdm-yaml", str(bad)], "is not a Felis schema"),
        (["--sdm-yaml", str(tmp_path / "none.yaml")], "cannot read"),
    ]
    for extra, message in cases:
        assert main(["schema", "diff", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
