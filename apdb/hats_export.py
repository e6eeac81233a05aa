"""Export DiaObjects with their nested DiaSources and DiaForcedSources as a HATS catalog.

The catalog is what LSDB opens (`lsdb.open_catalog`) and DuckDB queries
(``read_parquet('DIR/dataset/**/*.parquet')``): one row per latest DiaObject,
with two nested columns, ``diaSource`` and ``diaForcedSource`` (Parquet
``struct<column: list>``, the layout of LSDB's nested-pandas columns), partitioned by HEALPix at a
fixed ``order`` (leaf files ``dataset/Norder=k/Dir=d/Npix=p.parquet``), rows
sorted by ``_healpix_29`` (the HATS spatial index: our ``pixelId``, which is
order 29 NESTED).

The leaf files are written with pyarrow; the catalog metadata
(``partition_info.csv``, ``properties``, ``dataset/_metadata``) with the
`hats` library.  HATS' own import pipeline (hats-import, on Dask) balances
partition sizes by splitting dense pixels; a fixed order is used here so that
an export can be incremental: each partition's content hash is kept in
``apdb_export_state.json`` and a re-export rewrites only the partitions
whose content changed (new chunks replicated, withdrawn sources, ...).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from apdb.apdb import Apdb
from apdb.errors import ApdbError

__all__ = ["ExportStats", "export_hats"]

STATE_FILE = "apdb_export_state.json"
SPATIAL_INDEX = "_healpix_29"


@dataclass
class ExportStats:
    """What an export did."""

    partitions: int = 0
    written: int = 0
    removed: int = 0
    objects: int = 0


def _nest(children: pd.DataFrame, parents: np.ndarray) -> pa.Array:
    """Nested column: ``struct<column: list<value>>`` per parent (nested-pandas' layout).

    ``children`` have a ``diaObjectId``; each parent's rows are ordered by time.
    """
    children = children.sort_values(["diaObjectId", "midpointMjdTai"], kind="stable")
    table = pa.Table.from_pandas(children.drop(columns=["diaObjectId"]), preserve_index=False)
    owners = children["diaObjectId"].to_numpy(np.int64)
    starts = np.searchsorted(owners, parents, side="left")
    ends = np.searchsorted(owners, parents, side="right")
    offsets = pa.array(np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int32))
    take = pa.array(
        np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)] or [[]]),
        pa.int64(),
    )
    lists = [
        pa.ListArray.from_arrays(offsets, table.column(k).combine_chunks().take(take))
        for k in range(table.num_columns)
    ]
    return pa.StructArray.from_arrays(lists, names=table.column_names)


def export_hats(db: Apdb, out_dir: str | Path, order: int = 5, name: str = "apdb") -> ExportStats:
    """Export ``db`` (a PPDB or an APDB) as a HATS catalog in ``out_dir``.

    Raises
    ------
    ApdbError
        ``order`` out of range, or the `hats` library is missing.
    """
    try:
        from hats.catalog import CatalogType, PartitionInfo, TableProperties
        from hats.io import paths, write_parquet_metadata
        from hats.pixel_math import HealpixPixel
    except ImportError as exc:
        raise ApdbError("the HATS export needs the 'hats' extra: pip install 'apdb[hats]'") from exc
    from apdb.sql.export import read_export_frames

    if not 0 <= order <= 12:
        raise ApdbError(f"HATS partition order must be 0..12, got {order}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and state.get("order") != order:
        raise ApdbError(f"{out} was exported at order {state.get('order')}, not {order}")
    objects, sources, forced = read_export_frames(db)  # type: ignore[arg-type]
    objects = objects.sort_values("pixelId", kind="stable").reset_index(drop=True)
    objects.insert(0, SPATIAL_INDEX, objects["pixelId"].to_numpy(np.int64))
    shift = 2 * (29 - order)
    pix = objects["pixelId"].to_numpy(np.int64) >> shift
    hashes: dict[str, str] = {}
    stats = ExportStats(objects=len(objects))
    for p in np.unique(pix):
        part = objects[pix == p].reset_index(drop=True)
        ids = part["diaObjectId"].to_numpy(np.int64)
        table = pa.Table.from_pandas(part, preserve_index=False)
        table = table.append_column(
            "diaSource", _nest(sources[sources["diaObjectId"].isin(ids)], ids)
        )
        table = table.append_column(
            "diaForcedSource", _nest(forced[forced["diaObjectId"].isin(ids)], ids)
        )
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
        hashes[str(int(p))] = digest
        path = Path(paths.pixel_catalog_file(out, HealpixPixel(order, int(p))).path)
        if state.get("hashes", {}).get(str(int(p))) == digest and path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        stats.written += 1
    for old in set(state.get("hashes", {})) - set(hashes):  # partitions now empty
        Path(paths.pixel_catalog_file(out, HealpixPixel(order, int(old))).path).unlink(
            missing_ok=True
        )
        stats.removed += 1
    stats.partitions = len(hashes)
    pixels = [HealpixPixel(order, int(p)) for p in sorted(int(k) for k in hashes)]
    PartitionInfo.from_healpix(pixels).write_to_file(out / "partition_info.csv")
    TableProperties(
        catalog_name=name,
        catalog_type=CatalogType.OBJECT,
        total_rows=len(objects),
        ra_column="ra",
        dec_column="dec",
    ).to_properties_file(out)
    if pixels:
        write_parquet_metadata(out)
    state_path.write_text(json.dumps({"order": order, "hashes": hashes}))
    return stats
