"""``apdb upgrade``: migrate an APDB forward, or print the SQL that would do it.

Also holds the arguments and the runner shared with ``apdb downgrade``.
"""

from __future__ import annotations

import argparse
import os

from apdb.cli._common import add_database_args, config_from_args, engine_from_args

__all__ = ["add_migration_args", "configure_parser", "main", "run_migration"]


def add_migration_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--sql``, ``--dialect`` and the lock options."""
    parser.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL instead of running it (alembic offline mode; nothing connects); "
        "REVISION may be FROM:TO",
    )
    parser.add_argument(
        "--dialect",
        choices=("postgresql", "sqlite"),
        help="backend to render SQL for with --sql when no URL is given",
    )
    parser.add_argument(
        "--lock-timeout",
        type=int,
        default=1000,
        metavar="MS",
        help="PostgreSQL lock_timeout of each step in ms; writers wait at most this long "
        "behind a step (default: 1000)",
    )
    parser.add_argument(
        "--lock-retries",
        type=int,
        default=10,
        metavar="N",
        help="retries of a step whose lock wait timed out (default: 10)",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb upgrade``."""
    add_database_args(parser)
    parser.add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
    )
    add_migration_args(parser)


def _split_positionals(args: argparse.Namespace, default: str | None) -> None:
    """With ``--sql`` and no URL, a lone positional is the revision."""
    if args.url and "://" not in args.url and (args.revision in (None, default)):
        args.revision, args.url = args.url, None


def run_migration(args: argparse.Namespace, direction: str) -> int:
    """Run (or with ``--sql`` print) ``direction`` to ``args.revision``.

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments of ``apdb upgrade``/``downgrade``.
    direction : `str`
        ``"upgrade"`` or ``"downgrade"``.

    Returns
    -------
    status : `int`
        The exit status (0).
    """
    from apdb import migrate
    from apdb.errors import ApdbConfigError

    lock = {"lock_timeout_ms": args.lock_timeout, "retries": args.lock_retries}
    if args.lock_timeout <= 0 or args.lock_retries < 0:
        raise ApdbConfigError("--lock-timeout must be > 0 and --lock-retries >= 0")
    if args.sql:
        _split_positionals(args, "head" if direction == "upgrade" else None)
        if args.revision is None:
            raise ApdbConfigError("give the target revision of the downgrade")
        url = None
        if args.dialect is None:
            url = args.url or os.environ.get("APDB_URL")
            if not url and args.config:
                url = config_from_args(args).db_url
        script = migrate.sql_script(direction, args.revision, args.dialect, url, lock=lock)
        print(script, end="")
        return 0
    if args.dialect is not None:
        raise ApdbConfigError("--dialect only applies with --sql")
    if args.revision is None:
        raise ApdbConfigError("give the target revision of the downgrade")
    step = {"upgrade": migrate.upgrade, "downgrade": migrate.downgrade}[direction]
    engine = engine_from_args(args)
    try:
        with engine.connect() as conn:
            before = migrate.current_revision(conn)
        step(engine, args.revision, lock=lock)
        with engine.connect() as conn:
            after = migrate.current_revision(conn)
    finally:
        engine.dispose()
    print(f"{direction}d {before} -> {after}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Upgrade (or print the SQL) and print the new revision."""
    return run_migration(args, "upgrade")
