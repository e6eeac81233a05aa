"""Alert packaging throughput: PackageAlertsTask vs plain fastavro on the same records.

Builds one synthetic visit (a WCS'd image with N point sources, each with a
DiaObject, a DiaSource history and a forced-source history), runs
``PackageAlertsTask.run`` (records, three cutouts per alert, strict
serialisation, Avro file), then times plain ``fastavro.writer`` on the very
alerts the task wrote (read back from its file): the floor of any Avro
alert writer.

    python bench/alerts/bench_alerts.py [--n 10000] [--size 4096] [--history 10]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import fastavro
import numpy as np
import pandas as pd

from tasks.alerts import PackageAlertsConfig, PackageAlertsTask
from tasks.alerts.io import read_alert_file
from tasks.core.ids import make_ids
from tasks.images import Exposure, PhotoCalib, make_tan_wcs


def make_visit(n: int, size: int, n_history: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    wcs = make_tan_wcs(45.0, -30.0, (size / 2, size / 2), 0.2)
    shape = (size, size)
    image = rng.normal(0, 10, shape).astype(np.float32)
    variance = np.full(shape, 100.0, np.float32)
    calib = PhotoCalib(0.5)
    exposures = [
        Exposure(image, None, variance, wcs, photo_calib=calib, detector=3) for _ in range(3)
    ]
    visit, detector, mjd = 4242, 3, 60600.0
    x = rng.uniform(10, size - 10, n)
    y = rng.uniform(10, size - 10, n)
    ra, dec = exposures[0].pixel_to_sky(x, y)
    ids = make_ids(visit, detector, n)
    flux = rng.uniform(500, 5000, n)
    sources = pd.DataFrame(
        {
            "diaSourceId": ids,
            "diaObjectId": ids,
            "visit": visit,
            "detector": detector,
            "band": "r",
            "midpointMjdTai": mjd,
            "ra": ra,
            "dec": dec,
            "raErr": 1e-5,
            "decErr": 1e-5,
            "x": x,
            "y": y,
            "psfFlux": flux,
            "psfFluxErr": 50.0,
            "scienceFlux": flux + 100,
            "scienceFluxErr": 60.0,
            "snr": flux / 50,
            # footprint sides of point sources: most cutouts at the 30-pixel minimum
            "bboxSize": rng.integers(8, 40, n),
            "isDipole": False,
            "timeProcessedMjdTai": mjd + 0.001,
        }
    )
    objects = pd.DataFrame(
        {
            "diaObjectId": ids,
            "validityStartMjdTai": mjd,
            "ra": ra,
            "dec": dec,
            "nDiaSources": n_history + 1,
            "r_psfFluxMean": flux,
            "r_psfFluxMeanErr": 10.0,
            "r_psfFluxSigma": 30.0,
            "r_psfFluxNdata": n_history + 1,
            "g_psfFluxNdata": 0,
        }
    )
    rep = np.repeat(np.arange(n), n_history)
    epoch = np.tile(np.arange(n_history), n)
    history = sources.iloc[rep].reset_index(drop=True)
    history["diaSourceId"] = np.arange(len(history), dtype=np.int64) + 1
    history["visit"] = 1000 + epoch
    history["midpointMjdTai"] = mjd - 3 * (epoch + 1)
    forced = pd.DataFrame(
        {
            "diaForcedSourceId": np.arange(len(history), dtype=np.int64) + 1,
            "diaObjectId": ids[rep],
            "ra": ra[rep],
            "dec": dec[rep],
            "visit": 1000 + epoch,
            "detector": detector,
            "midpointMjdTai": mjd - 3 * (epoch + 1),
            "psfFlux": flux[rep],
            "psfFluxErr": 50.0,
            "scienceFlux": flux[rep],
            "scienceFluxErr": 60.0,
            "band": "r",
            "timeProcessedMjdTai": mjd,
        }
    )
    return sources, objects, history, forced, exposures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="alerts (DiaSources) in the visit")
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels")
    parser.add_argument("--history", type=int, default=10, help="previous DiaSources per object")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sources, objects, history, forced, (diff, sci, tmpl) = make_visit(
        args.n, args.size, args.history
    )
    with tempfile.TemporaryDirectory() as tmp:
        task = PackageAlertsTask(PackageAlertsConfig(alertWriteLocation=tmp))
        best = best_cpu = np.inf
        for _ in range(args.repeat):
            task.emptyMetadata()
            start, cpu = time.perf_counter(), time.process_time()
            result = task.run(sources, objects, history, forced, diff, sci, tmpl)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        meta = task.metadata
        alerts = read_alert_file(result.alertFile)
        size_mb = result.alertFile.stat().st_size / 1e6
    ref = ref_cpu = np.inf
    for _ in range(args.repeat):
        buf = io.BytesIO()
        start, cpu = time.perf_counter(), time.process_time()
        fastavro.writer(buf, task.alertSchema.parsed, alerts)
        ref = min(ref, time.perf_counter() - start)
        ref_cpu = min(ref_cpu, time.process_time() - cpu)
    n = result.nAlerts
    print(f"alerts: {n}  (history {args.history} DiaSources + {args.history} forced per alert)")
    print(f"file: {size_mb:.1f} MB, {1e3 * size_mb / max(n, 1):.1f} kB per alert")
    print(
        f"PackageAlertsTask.run: {best:.2f} s wall = {n / best:,.0f} alerts/s; "
        f"{best_cpu:.2f} s CPU = {n / best_cpu:,.0f} alerts/s "
        f"(prepare {meta['prepareDuration']:.2f} s, package+write {meta['packageDuration']:.2f} s)"
    )
    print(
        f"plain fastavro.writer, same records: {ref:.2f} s wall = {n / ref:,.0f} alerts/s; "
        f"{ref_cpu:.2f} s CPU = {n / ref_cpu:,.0f} alerts/s"
    )
    print(f"ratio task / plain fastavro: {best / ref:.2f} (wall), {best_cpu / ref_cpu:.2f} (CPU)")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
