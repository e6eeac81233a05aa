"""Daytime APDB operations: our `apdb` against Rubin's ``lsst-dax-apdb`` on one PostgreSQL.

Both implementations get the same seeded catalogs: ``--objects`` DiaObjects
(stored ``--per-store`` at a time, one visit each, one DiaSource per object),
then time, on ``--batch`` objects or sources each:

``dedup_read``       every DiaObject for deduplication (`get_dia_objects_for_dedup`
                     / ``getDiaObjectsForDedup``, all ``--objects`` rows);
``sources_of``       the DiaSources of ``--batch`` objects
                     (`get_dia_sources_for_dia_objects`);
``reassign``         ``--batch`` sources moved to neighbouring objects, counts
                     incremented and decremented;
``validity_end``     ``--batch`` objects closed (`set_validity_end`);
``withdraw``         ``--batch`` sources withdrawn.

Each repetition uses fresh databases on the same throwaway server (the order
of the two implementations alternates); the table gives the median seconds
per operation and the ratio reference / ours.  Results are checked (row
counts, returned counts, the moved ``nDiaSources``); a mismatch makes the exit
status 1.  Rubin's ``ApdbSql`` runs in its ``baseline`` DiaObject mode (one
DiaObject table with ``validityEnd``, like ours).

Needs the ``bench`` extra (``lsst-dax-apdb``, ``psycopg2-binary``) and the
PostgreSQL server binaries.  Run from the repository root::

    python -m bench.apdb_daytime --objects 20000 --batch 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from astropy.time import Time  # noqa: E402

from apdb.testing.catalogs import make_dia_objects, make_dia_sources, random_positions  # noqa: E402
from bench.apdb_cycle.server import Server  # noqa: E402

OPS = ("dedup_read", "sources_of", "reassign", "validity_end", "withdraw")
T0 = 60000.0
RA0, DEC0 = 60.0, -30.0


def make_catalogs(
    n: int, per_store: int, seed: int = 7
) -> list[tuple[Time, pd.DataFrame, pd.DataFrame]]:
    """``(visit time, objects, sources)`` of each store: one source per object."""
    rng = np.random.default_rng(seed)
    out = []
    for k, start in enumerate(range(0, n, per_store)):
        ids = np.arange(start + 1, min(n, start + per_store) + 1, dtype=np.int64)
        ra, dec = random_positions(len(ids), RA0, DEC0, 1.0, rng)
        mjd = T0 + (k + 1) / 1440.0
        objects = make_dia_objects(ids, ra, dec, rng)
        sources = make_dia_sources(ids + 10_000_000, ids, ra, dec, k + 1, 1, mjd, rng)
        # NOT NULL columns Rubin's store needs (ours fills them itself).
        sources["psfNdata"] = np.int32(1)
        sources["dipoleNdata"] = np.int32(0)
        sources["timeProcessedMjdTai"] = mjd + 0.01
        out.append((Time(mjd, format="mjd", scale="tai"), objects, sources))
    return out


def plan(n: int, batch: int) -> dict[str, object]:
    """Which ids each operation touches (the same for both implementations)."""
    ids = np.arange(1, n + 1, dtype=np.int64)
    movers = ids[0 : 2 * batch : 2]  # odd objects give their source to the next one
    return {
        "sources_of": ids[:batch],
        "reassign": {int(o) + 10_000_000: int(o) + 1 for o in movers},
        "validity_end": movers,  # the objects left empty
        "withdraw": ids[-batch:] + 10_000_000,
    }


class Ours:
    name = "apdb (ours)"

    def __init__(self, url: str):
        from apdb import Apdb

        self.db = Apdb.create(url)

    def store(self, t, objects, sources):
        self.db.store(t, objects, sources)

    def dedup_read(self) -> int:
        return len(self.db.get_dia_objects_for_dedup())

    def sources_of(self, ids, catalogs) -> int:
        return len(
            self.db.get_dia_sources_for_dia_objects(ids, Time(T0, format="mjd", scale="tai"))
        )

    def reassign(self, moves, catalogs) -> None:
        self.db.reassign_dia_sources_to_dia_objects(moves)

    def validity_end(self, ids, catalogs) -> int:
        return self.db.set_validity_end(ids, Time(T0 + 1.0, format="mjd", scale="tai"))

    def withdraw(self, ids, catalogs) -> None:
        self.db.withdraw_dia_sources(ids, time_withdrawn=Time(T0 + 1.0, format="mjd", scale="tai"))

    def n_sources(self, object_ids) -> np.ndarray:
        got = self.db.get_dia_objects_for_dedup().set_index("diaObjectId")
        return got.loc[object_ids, "nDiaSources"].to_numpy()

    def close(self):
        self.db.close()


class Reference:
    name = "lsst-dax-apdb"

    def __init__(self, url: str):
        from lsst.dax.apdb import Apdb, ApdbTables
        from lsst.dax.apdb.sql import ApdbSql

        self.db = Apdb.from_config(ApdbSql.init_database(url, dia_object_index="baseline"))
        self.columns = {
            t: [c.name for c in self.db.tableDef(ApdbTables[t]).columns]
            for t in ("DiaObject", "DiaSource")
        }

    def store(self, t, objects, sources):
        objects = objects[[c for c in objects.columns if c in self.columns["DiaObject"]]]
        sources = sources[[c for c in sources.columns if c in self.columns["DiaSource"]]]
        self.db.store(t, objects, sources)

    def dedup_read(self) -> int:
        return len(self.db.getDiaObjectsForDedup())

    @staticmethod
    def _object_ids(ids, catalogs):
        from lsst.dax.apdb import DiaObjectId

        objects = pd.concat([c[1] for c in catalogs]).set_index("diaObjectId").loc[ids]
        return [
            DiaObjectId(diaObjectId=int(i), ra=float(r.ra), dec=float(r.dec))
            for i, r in zip(ids, objects.itertuples(), strict=True)
        ]

    @staticmethod
    def _source_ids(ids, catalogs):
        from lsst.dax.apdb import DiaSourceId

        sources = pd.concat([c[2] for c in catalogs]).set_index("diaSourceId").loc[list(ids)]
        return [
            DiaSourceId(
                diaSourceId=int(i),
                ra=float(r.ra),
                dec=float(r.dec),
                midpointMjdTai=float(r.midpointMjdTai),
            )
            for i, r in zip(ids, sources.itertuples(), strict=True)
        ]

    def sources_of(self, ids, catalogs) -> int:
        start = Time(T0, format="mjd", scale="tai")
        return len(self.db.getDiaSourcesForDiaObjects(self._object_ids(ids, catalogs), start))

    def reassign(self, moves, catalogs) -> None:
        keys = self._source_ids(list(moves), catalogs)
        self.db.reassignDiaSourcesToDiaObjects({k: moves[k.diaSourceId] for k in keys})

    def validity_end(self, ids, catalogs) -> int:
        end = Time(T0 + 1.0, format="mjd", scale="tai")
        return self.db.setValidityEnd(self._object_ids(ids, catalogs), end)

    def withdraw(self, ids, catalogs) -> None:
        when = Time(T0 + 1.0, format="mjd", scale="tai")
        self.db.withdrawDiaSources(self._source_ids(ids, catalogs), timeWithdrawn=when)

    def n_sources(self, object_ids) -> np.ndarray:
        got = self.db.getDiaObjectsForDedup()
        latest = got.sort_values("validityStartMjdTai").drop_duplicates("diaObjectId", keep="last")
        return latest.set_index("diaObjectId").loc[object_ids, "nDiaSources"].to_numpy()

    def close(self):
        engine = getattr(self.db, "_engine", None)
        if engine is not None:
            engine.dispose()


def run_one(impl, catalogs, todo, n: int, batch: int) -> tuple[dict[str, float], list[str]]:
    """Store the catalogs (untimed), then time each operation once; check results."""
    for t, objects, sources in catalogs:
        impl.store(t, objects, sources)
    times: dict[str, float] = {}
    errors: list[str] = []

    def timed(op, *args):
        t0 = time.perf_counter()
        result = getattr(impl, op)(*args)
        times[op] = time.perf_counter() - t0
        return result

    if (got := timed("dedup_read")) != n:
        errors.append(f"{impl.name} dedup_read: {got} rows, expected {n}")
    if (got := timed("sources_of", todo["sources_of"], catalogs)) != batch:
        errors.append(f"{impl.name} sources_of: {got} rows, expected {batch}")
    timed("reassign", todo["reassign"], catalogs)
    targets = np.array(sorted(todo["reassign"].values()), dtype=np.int64)
    if not (impl.n_sources(targets) == 2).all():
        errors.append(f"{impl.name} reassign: targets' nDiaSources are not all 2")
    got = timed("validity_end", todo["validity_end"], catalogs)
    if got != batch:
        errors.append(f"{impl.name} validity_end: {got} closed, expected {batch}")
    timed("withdraw", todo["withdraw"], catalogs)
    return times, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--per-store", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server-dsn", default=None, help="existing PostgreSQL server (libpq DSN)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/apdb_daytime.json"))
    args = parser.parse_args(argv)
    if 2 * args.batch > args.objects:
        parser.error("--batch may be at most half of --objects")

    catalogs = make_catalogs(args.objects, args.per_store)
    todo = plan(args.objects, args.batch)
    samples: dict[str, dict[str, list[float]]] = {}
    errors: list[str] = []
    with Server(args.server_dsn) as server:
        for rep in range(args.repeat):
            order = (Ours, Reference) if rep % 2 == 0 else (Reference, Ours)
            for cls in order:
                driver = "psycopg2" if cls is Reference else "psycopg"
                url = server.create_database(f"daytime_{cls.__name__.lower()}_{rep}", driver)
                impl = cls(url)
                try:
                    times, errs = run_one(impl, catalogs, todo, args.objects, args.batch)
                finally:
                    impl.close()
                errors += errs
                for op, value in times.items():
                    samples.setdefault(cls.name, {}).setdefault(op, []).append(value)
                print(
                    f"repetition {rep + 1} {cls.name}: "
                    + ", ".join(f"{k} {v:.3f}s" for k, v in times.items()),
                    flush=True,
                )
        version = server.version()

    medians = {
        name: {op: statistics.median(v) for op, v in ops.items()} for name, ops in samples.items()
    }
    print()
    print(
        f"{args.objects:,} DiaObjects, batches of {args.batch:,}, median of {args.repeat} (seconds)"
    )
    print()
    print("| operation | lsst-dax-apdb | apdb (ours) | ratio |")
    print("|---|---:|---:|---:|")
    for op in OPS:
        ref, ours = medians[Reference.name][op], medians[Ours.name][op]
        print(f"| {op} | {ref:.3f} | {ours:.3f} | {ref / ours:.1f}x |")
    for e in errors:
        print("CHECK FAILED:", e)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "postgres": version,
                "machine": platform.platform(),
                "samples": samples,
                "medians": medians,
                "errors": errors,
            },
            indent=2,
        )
    )
    print(f"\nresults written to {args.output}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
