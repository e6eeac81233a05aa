"""``apdb schema diff``: compare the schema with Rubin's apdb.yaml and draft a revision."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb schema``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    diff = sub.add_parser(
        "diff",
        help="compare with an apdb.yaml of lsst-sdm-schemas; write a draft alembic revision",
        description="Compare our columns with Rubin's apdb.yaml and write a draft alembic "
        "revision (new columns, type changes; removed columns as comments) for review.",
    )
    source = diff.add_mutually_exclusive_group()
    source.add_argument(
        "--sdm-version",
        metavar="X",
        help="version the installed lsst-sdm-schemas apdb.yaml must have (default: any)",
    )
    source.add_argument("--sdm-yaml", metavar="PATH", help="an apdb.yaml file to compare with")
    diff.add_argument(
        "--output",
        metavar="DIR",
        default=".",
        help="directory for the draft revision (default: current directory)",
    )
    diff.add_argument(
        "--revision", metavar="ID", help="id of the draft (default: the head revision + 1)"
    )


def _next_revision(head: str) -> str:
    return f"{int(head) + 1:04d}" if head.isdigit() else f"{head}_next"


def main(args: argparse.Namespace) -> int:
    """Print the differences and write the draft revision (nothing when they agree)."""
    from apdb import migrate
    from apdb.errors import ApdbConfigError
    from apdb.schema_diff import diff_schema, load_sdm_schema, render_revision

    sdm = load_sdm_schema(version=args.sdm_version, path=args.sdm_yaml)
    diff = diff_schema(sdm)
    print(f"apdb.yaml {sdm.version} ({sdm.source})")
    for table, col in diff.added:
        print(f"  new column      {table}.{col.name} {col.datatype}")
    for table, mine, theirs in diff.changed:
        print(f"  changed column  {table}.{mine.name} {_short(mine)} -> {_short(theirs)}")
    for table, col in diff.removed:
        print(f"  removed column  {table}.{col.name} (kept; listed in the draft)")
    for table in diff.missing_tables:
        print(f"  table not in the APDB  {table}")
    if diff.empty:
        print("no column differences: no draft written")
        return 0
    head = migrate.head_revision()
    revision = args.revision or _next_revision(head)
    out_dir = Path(args.output)
    if not out_dir.is_dir():
        raise ApdbConfigError(f"--output {out_dir} is not a directory")
    slug = sdm.version.replace(".", "_") or "draft"
    path = out_dir / f"{revision}_sdm_{slug}.py"
    if path.exists():
        raise ApdbConfigError(f"{path} exists; remove it or choose --revision/--output")
    path.write_text(render_revision(diff, sdm, revision, head))
    print(
        f"draft revision {revision} (after {head}) written to {path}: review it, regenerate "
        f"apdb/_rubin_columns.py, then move it to migrations/versions/"
    )
    return 0


def _short(col) -> str:
    length = f"({col.length})" if col.length else ""
    return f"{col.datatype}{length}{'' if col.nullable else ' NOT NULL'}"
