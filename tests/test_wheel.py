"""The wheel: top-level packages ``apdb`` and ``tasks`` only, migrations inside ``apdb``.

The wheel is built once (hatchling, in-process, a second or two); the
migration test unpacks it into a temporary directory and creates an APDB
from that copy alone, in a fresh interpreter that cannot see the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("wheel")
    paths = list(WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"]))
    assert len(paths) == 1
    return Path(paths[0])


def repository_migrations() -> set[str]:
    """Files of the repository's migrations/ folder (no caches), relative to it."""
    folder = ROOT / "migrations"
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_top_level_packages_are_apdb_and_tasks(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == {"apdb", "tasks"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/"))]


def test_migrations_ship_inside_apdb(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        n.removeprefix("apdb/migrations/") for n in names if n.startswith("apdb/migrations/")
    }
    assert shipped == repository_migrations()
    assert {"env.py", "script.py.mako"} <= shipped
    assert any(n.startswith("versions/0001") for n in shipped)


def test_alembic_migrates_from_the_installed_wheel(wheel, tmp_path):
    from apdb import migrate

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        # the checkout (editable install, current directory) must not be importable
        # (a virtual environment inside the checkout, as .ci/run makes, stays visible)
        sys.path = [
            p for p in sys.path
            if p and not (p.startswith({str(ROOT)!r}) and "site-packages" not in p)
        ]
        sys.path.insert(0, {str(site)!r})
        assert importlib.util.find_spec("migrations") is None, "repository folder visible"
        import apdb, apdb.migrate as migrate
        assert apdb.__file__.startswith({str(site)!r}), apdb.__file__
        location = migrate.script_location()
        assert str(location) == {str(site / "apdb" / "migrations")!r}, location
        # revisions import the environment's helpers as `migrations.<name>`
        import apdb.migrations.online, migrations.online
        assert migrations.online is apdb.migrations.online
        from apdb import Apdb
        with Apdb.create("sqlite:///{tmp_path / "wheel.sqlite3"}") as db:
            print(migrate.head_revision(), db.schema_version(), len(migrate.history()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    head, current, n_revisions = result.stdout.split()
    assert head == current == migrate.head_revision()
    assert int(n_revisions) == len(migrate.history())
