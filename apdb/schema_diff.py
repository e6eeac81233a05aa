"""Compare the APDB schema with a release of Rubin's ``apdb.yaml`` and draft a revision.

Rubin publishes the APDB schema as ``apdb.yaml`` in the ``lsst-sdm-schemas``
package (a Felis document).  `load_sdm_schema` reads it (the installed copy,
or any file), `diff_schema` compares its columns with ours (the Rubin columns
of `apdb._rubin_columns`; our own additions such as ``pixelId`` are not
Rubin's and never reported), and `render_revision` writes a *draft* alembic
revision for a human to review:

- new columns become `migrations.online.add_column_online` calls (NOT NULL
  columns are added nullable, with a note: backfill, then tighten);
- type, length or nullability changes become ``alter_column`` calls in a
  batch block (SQLite recreates the table; PostgreSQL rewrites it for a type
  change, which the draft says);
- removed columns are listed as comments only: dropping data is a human's
  decision (and our store may still write them);
- Rubin tables we do not have are listed as comments.

`apdb._rubin_columns` must then be regenerated from the new ``apdb.yaml``
so that the code writes what the schema holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apdb._rubin_columns import RUBIN_COLUMNS
from apdb.errors import ApdbError
from apdb.schema import ColumnInfo

__all__ = [
    "SchemaDiff",
    "SchemaDiffError",
    "SdmSchema",
    "diff_schema",
    "installed_sdm_path",
    "load_sdm_schema",
    "render_revision",
]

# SQLAlchemy type of each Felis datatype, as Python source for the draft.
_SA_SOURCE = {
    "long": "sa.BigInteger()",
    "int": "sa.Integer()",
    "short": "sa.SmallInteger()",
    "byte": "sa.SmallInteger()",
    "double": "sa.Double()",
    "float": "sa.REAL()",
    "boolean": "sa.Boolean()",
    "text": "sa.Text()",
    "timestamp": "sa.TIMESTAMP()",
    "binary": "sa.LargeBinary()",
}


class SchemaDiffError(ApdbError):
    """The SDM schema cannot be found or read."""


@dataclass(frozen=True)
class SdmSchema:
    """Columns of Rubin's ``apdb.yaml``.

    Attributes
    ----------
    version : `str`
        The document's ``version``.
    tables : `dict` [`str`, `list` [`ColumnInfo`]]
        Columns of each table, in document order.
    source : `str`
        Path of the file read.
    """

    version: str
    tables: dict[str, list[ColumnInfo]]
    source: str


@dataclass
class SchemaDiff:
    """Differences between our schema and an `SdmSchema` (ours -> theirs).

    Attributes
    ----------
    added : `list` [`tuple` [`str`, `ColumnInfo`]]
        Columns of theirs we lack.
    changed : `list` [`tuple` [`str`, `ColumnInfo`, `ColumnInfo`]]
        (table, ours, theirs) with another datatype, length or nullability.
    removed : `list` [`tuple` [`str`, `ColumnInfo`]]
        Rubin columns of ours they no longer have.
    missing_tables : `list` [`str`]
        Tables of theirs we do not have at all.
    """

    added: list[tuple[str, ColumnInfo]] = field(default_factory=list)
    changed: list[tuple[str, ColumnInfo, ColumnInfo]] = field(default_factory=list)
    removed: list[tuple[str, ColumnInfo]] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether the columns of the shared tables agree."""
        return not (self.added or self.changed or self.removed)


def installed_sdm_path() -> Path:
    """Path of ``apdb.yaml`` in the installed ``lsst-sdm-schemas``.

    Raises
    ------
    SchemaDiffError
        The package is not installed.
    """
    try:
        from lsst.sdm import schemas
    except ImportError as exc:
        raise SchemaDiffError(
            "lsst-sdm-schemas is not installed (pip install lsst-sdm-schemas), "
            "or give --sdm-yaml PATH"
        ) from exc
    return Path(os.path.dirname(schemas.__file__)) / "apdb.yaml"


def load_sdm_schema(version: str | None = None, path: str | Path | None = None) -> SdmSchema:
    """Read ``apdb.yaml``: a given file, or the installed one (checked against ``version``).

    Parameters
    ----------
    version : `str`, optional
        Expected version of the installed file.
    path : `str` or `pathlib.Path`, optional
        A Felis ``apdb.yaml`` to read instead of the installed one.

    Raises
    ------
    SchemaDiffError
        Missing or unreadable file, not a Felis document, unknown datatype,
        or the installed version is not ``version``.
    """
    path = Path(path) if path is not None else installed_sdm_path()
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaDiffError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), list):
        raise SchemaDiffError(f"{path} is not a Felis schema (no 'tables' list)")
    found = str(doc.get("version", ""))
    if version is not None and found != version:
        raise SchemaDiffError(
            f"the installed lsst-sdm-schemas has apdb.yaml version {found}, not {version}: "
            f"install that release (pip install lsst-sdm-schemas==...) or give --sdm-yaml PATH"
        )
    tables = {}
    for table in doc["tables"]:
        cols = []
        for col in table.get("columns", []):
            datatype = col.get("datatype")
            if datatype not in _SA_SOURCE and datatype not in ("char", "string"):
                raise SchemaDiffError(
                    f"{path}: {table.get('name')}.{col.get('name')}: unknown datatype {datatype!r}"
                )
            nullable = bool(col.get("nullable", True))
            cols.append(ColumnInfo(col["name"], datatype, nullable, col.get("length")))
        tables[table["name"]] = cols
    return SdmSchema(found, tables, str(path))


def diff_schema(sdm: SdmSchema, ours: dict[str, list] | None = None) -> SchemaDiff:
    """Compare our Rubin columns with ``sdm``.

    Parameters
    ----------
    sdm : `SdmSchema`
        Rubin's schema.
    ours : `dict`, optional
        ``{table: [(name, datatype, nullable, length), ...]}``; default
        `apdb._rubin_columns.RUBIN_COLUMNS`.
    """
    ours = RUBIN_COLUMNS if ours is None else ours
    diff = SchemaDiff()
    for table, rows in ours.items():
        mine = {r[0]: ColumnInfo(*r) for r in rows}
        theirs = {c.name: c for c in sdm.tables.get(table, [])}
        if table not in sdm.tables:
            diff.removed += [(table, c) for c in mine.values()]
            continue
        for name, col in theirs.items():
            if name not in mine:
                diff.added.append((table, col))
            elif mine[name] != col:
                diff.changed.append((table, mine[name], col))
        diff.removed += [(table, c) for n, c in mine.items() if n not in theirs]
    diff.missing_tables = [t for t in sdm.tables if t not in ours and t != "metadata"]
    return diff


def _type_source(col: ColumnInfo) -> str:
    if col.datatype == "char":
        return f"sa.CHAR(length={col.length})"
    if col.datatype == "string":
        return f"sa.VARCHAR(length={col.length})"
    return _SA_SOURCE[col.datatype]


def _describe(col: ColumnInfo) -> str:
    length = f"({col.length})" if col.length else ""
    return f"{col.datatype}{length} {'NULL' if col.nullable else 'NOT NULL'}"


_HEADER = '''"""{message}

Revision ID: {revision}
Revises: {down}
Create Date: (draft written by `apdb schema diff`)

DRAFT for a human to review; generated from {source}
(apdb.yaml version {version}).  Before committing: check each step, regenerate
apdb/_rubin_columns.py from the same apdb.yaml (and RUBIN_SCHEMA_VERSION),
and run the migration tests.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

try:  # an installed wheel ships the migrations as apdb/migrations
    from apdb.migrations import online
except ModuleNotFoundError:  # a source checkout
    from migrations import online

revision: str = {revision!r}
down_revision: Union[str, Sequence[str], None] = {down!r}
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None
'''


def render_revision(diff: SchemaDiff, sdm: SdmSchema, revision: str, down_revision: str) -> str:
    """Python source of a draft alembic revision applying ``diff``.

    Parameters
    ----------
    diff : `SchemaDiff`
        What differs.
    sdm : `SdmSchema`
        The schema compared with (named in the docstring).
    revision, down_revision : `str`
        Ids of the draft and of the revision it follows.
    """
    out = [
        _HEADER.format(
            message=f"follow Rubin apdb.yaml {sdm.version} (draft)",
            revision=revision,
            down=down_revision,
            source=sdm.source,
            version=sdm.version,
        )
    ]
    up, down = [], []
    for table, col in diff.added:
        note = ""
        if not col.nullable:
            note = "  # NOT NULL in apdb.yaml: added nullable; backfill, then set NOT NULL"
        up.append(
            f"    online.add_column_online({table!r}, "
            f"sa.Column({col.name!r}, {_type_source(col)}, nullable=True)){note}"
        )
        down.append(f"    online.drop_column_online({table!r}, {col.name!r})")
    for table, mine, theirs in diff.changed:
        rewrite = mine.datatype != theirs.datatype or mine.length != theirs.length
        up.append(f"    # {table}.{mine.name}: {_describe(mine)} -> {_describe(theirs)}")
        if rewrite:
            up.append(
                "    # PostgreSQL rewrites the table for a type change, holding an ACCESS "
                "EXCLUSIVE lock throughout: plan a quiet window, or add a new column and backfill."
            )
        for target, source, lines in ((theirs, mine, up), (mine, theirs, down)):
            # Views reading the table block a type change (PostgreSQL) and
            # break in SQLite's table rebuild: dropped and recreated around it.
            lines.append(
                f"    with online.views_dropped([{table!r}]), "
                f"op.batch_alter_table({table!r}) as batch:\n"
                f"        batch.alter_column(\n"
                f"            {mine.name!r},\n"
                f"            existing_type={_type_source(source)},\n"
                f"            type_={_type_source(target)},\n"
                f"            existing_nullable={source.nullable},\n"
                f"            nullable={target.nullable},\n"
                f"        )"
            )
    out.append("\ndef upgrade() -> None:")
    out.extend(up or ["    pass"])
    if diff.removed:
        out.append(
            "    # Columns of ours that this apdb.yaml no longer has (NOT dropped; decide and\n"
            "    # drop with online.drop_column_online once no code writes them):"
        )
        out.extend(f"    #   {t}.{c.name} ({_describe(c)})" for t, c in diff.removed)
    if diff.missing_tables:
        out.append("    # Tables of this apdb.yaml that the APDB does not have (not created):")
        out.extend(f"    #   {t}" for t in diff.missing_tables)
    out.append("\n\ndef downgrade() -> None:")
    out.extend(reversed(down) if down else ["    pass"])
    return "\n".join(out) + "\n"
