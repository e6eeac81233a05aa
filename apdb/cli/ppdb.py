"""``apdb ppdb``: create a PPDB and replicate an APDB's replica chunks into it."""

from __future__ import annotations

import argparse
import time

from apdb.replica import CHUNKS_PER_TRANSACTION

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``apdb ppdb create`` and ``apdb ppdb replicate``."""
    sub = parser.add_subparsers(dest="ppdb_command", required=True)
    create = sub.add_parser("create", help="create a PPDB (APDB schema, views, reader role)")
    create.add_argument("url", help="database URL of the new PPDB")
    rep = sub.add_parser(
        "replicate", help="copy the finished replica chunks of an APDB into a PPDB"
    )
    rep.add_argument("apdb_url", help="URL of the APDB (created with replication enabled)")
    rep.add_argument("ppdb_url", help="URL of the PPDB (`apdb ppdb create`)")
    mode = rep.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="replicate what is finished, exit")
    mode.add_argument(
        "--follow", action="store_true", help="keep replicating as chunks finish (Ctrl-C stops)"
    )
    rep.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a chunk is finished this long after its end (default: the chunk length)",
    )
    rep.add_argument(
        "--interval", type=float, default=30.0, metavar="SECONDS", help="poll period of --follow"
    )
    rep.add_argument("--max-chunks", type=int, default=None, help="stop after N chunks")
    rep.add_argument(
        "--chunks-per-transaction",
        type=int,
        default=CHUNKS_PER_TRANSACTION,
        metavar="N",
        help=f"chunks copied in one PPDB transaction (default {CHUNKS_PER_TRANSACTION})",
    )
    exp = sub.add_parser(
        "export-hats", help="export DiaObjects with nested sources as a HATS catalog (LSDB)"
    )
    exp.add_argument("url", help="URL of the PPDB (or of an APDB)")
    exp.add_argument("out_dir", help="catalog directory (created; re-exports are incremental)")
    exp.add_argument("--order", type=int, default=5, help="HEALPix order of the partitions")


def main(args: argparse.Namespace) -> int:
    """Run the ``ppdb`` subcommand."""
    from apdb.errors import ApdbConfigError
    from apdb.sql import ApdbSql
    from apdb.sql.ppdb import create_ppdb, open_ppdb, replicate

    if args.ppdb_command == "create":
        with create_ppdb(args.url) as db:
            print(f"PPDB ready at {args.url} (schema revision {db.schema_version()})")
        return 0
    from apdb.config import ApdbConfig

    if args.ppdb_command == "export-hats":
        from apdb.hats_export import export_hats

        with ApdbSql(ApdbConfig(db_url=args.url)) as db:
            stats = export_hats(db, args.out_dir, order=args.order)
        print(
            f"exported {stats.objects} DiaObjects into {stats.partitions} partitions of "
            f"order {args.order} at {args.out_dir}: {stats.written} written, "
            f"{stats.removed} removed, {stats.partitions - stats.written} unchanged"
        )
        return 0

    apdb = ApdbSql(ApdbConfig(db_url=args.apdb_url))
    try:
        if not apdb.replication_enabled:
            raise ApdbConfigError(
                f"{args.apdb_url} was created without replication: it records no replica chunks"
            )
        with open_ppdb(args.ppdb_url) as ppdb:
            return _run(apdb, ppdb, args, replicate)
    except KeyboardInterrupt:  # a chunk cut short is done again by the next run
        print("interrupted", flush=True)
        return 130
    finally:
        apdb.close()


def _run(apdb, ppdb, args: argparse.Namespace, replicate) -> int:
    """Replicate once, or forever with ``--follow``."""
    while True:
        stats = replicate(
            apdb,
            ppdb,
            grace=args.grace,
            max_chunks=args.max_chunks,
            chunks_per_transaction=args.chunks_per_transaction,
        )
        if stats.chunks or stats.already_done or not args.follow:
            print(
                f"replicated {stats.chunks} chunks ({stats.rows} rows, "
                f"{stats.update_records} update records; {stats.already_done} already "
                f"in the PPDB) in {stats.seconds:.2f} s: {stats.rows_per_second:.0f} rows/s",
                flush=True,
            )
        if not args.follow:
            return 0
        time.sleep(args.interval)
