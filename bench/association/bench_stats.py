"""Benchmark: DiaObject summary statistics from a 12-month DiaSource history.

Times `compute_dia_object_stats` (flat numpy group keys, ``bincount`` and
``ufunc.at``) against a plain pandas reference in the style of per-plugin
``groupby(...).apply`` code (one Python call per object and band), on the same
history in the same run, checks that both agree, and reports the ratio.

Run: ``python bench/association/bench_stats.py [--objects N] [--per-object N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from tasks.association.diaobject_stats import compute_dia_object_stats


def make_history(n_objects: int, per_object: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_objects * per_object
    obj = np.repeat(np.arange(n_objects, dtype=np.int64) + 1, per_object)
    ra0 = rng.uniform(0, 360, n_objects)
    dec0 = rng.uniform(-60, 20, n_objects)
    return pd.DataFrame(
        {
            "diaObjectId": obj,
            "band": rng.choice(list("ugrizy"), n),
            "ra": ra0[obj - 1] + rng.normal(0, 3e-5, n),
            "dec": dec0[obj - 1] + rng.normal(0, 3e-5, n),
            "raErr": 3e-5,
            "decErr": 3e-5,
            "midpointMjdTai": 60000 + rng.uniform(0, 360, n),
            "psfFlux": rng.normal(1000, 300, n),
            "psfFluxErr": rng.uniform(50, 150, n),
            "scienceFlux": rng.normal(5000, 100, n),
            "scienceFluxErr": rng.uniform(20, 60, n),
        }
    )


def reference(history: pd.DataFrame) -> pd.DataFrame:
    """Per-(object, band) groupby-apply, the straightforward pandas way."""

    def band_stats(b: pd.DataFrame) -> pd.Series:
        b = b.sort_values("midpointMjdTai")
        w = 1.0 / b["psfFluxErr"] ** 2
        ws = 1.0 / b["scienceFluxErr"] ** 2
        slopes = np.abs(np.diff(b["psfFlux"]) / np.diff(b["midpointMjdTai"]))
        return pd.Series(
            {
                "psfFluxMean": np.sum(w * b["psfFlux"]) / w.sum(),
                "psfFluxMeanErr": 1 / np.sqrt(w.sum()),
                "psfFluxSigma": b["psfFlux"].std(ddof=1),
                "psfFluxNdata": len(b),
                "psfFluxMin": b["psfFlux"].min(),
                "psfFluxMax": b["psfFlux"].max(),
                "psfFluxMaxSlope": slopes.max() if len(slopes) else np.nan,
                "psfFluxErrMean": b["psfFluxErr"].mean(),
                "scienceFluxMean": np.sum(ws * b["scienceFlux"]) / ws.sum(),
                "scienceFluxMeanErr": 1 / np.sqrt(ws.sum()),
            }
        )

    per_band = history.groupby(["diaObjectId", "band"]).apply(band_stats)
    wide = per_band.unstack("band")
    wide.columns = [f"{band}_{stat}" for stat, band in wide.columns]
    return wide


def timed(func, repeats: int):
    best, best_cpu, out = np.inf, np.nan, None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = func()
        wall = time.perf_counter() - start
        if wall < best:
            best, best_cpu = wall, time.process_time() - cpu
    return best, best_cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--per-object", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    history = make_history(args.objects, args.per_object)
    t_ours, cpu_ours, ours = timed(lambda: compute_dia_object_stats(history), args.repeats)
    t_ref, cpu_ref, ref = timed(lambda: reference(history), 1)
    ours = ours.set_index("diaObjectId")
    worst = 0.0
    for column in ref.columns:
        a = ours.loc[ref.index, column].to_numpy(float)
        b = ref[column].to_numpy(float)
        if column.endswith("Ndata"):  # bands never observed: 0 for us, absent for apply
            b = np.nan_to_num(b, nan=0.0)
        ok = np.isfinite(b)
        assert np.array_equal(np.isfinite(a), ok), column
        worst = max(worst, float(np.max(np.abs(a[ok] - b[ok]) / (np.abs(b[ok]) + 1e-12))))
    print(
        json.dumps(
            {
                "objects": args.objects,
                "history_rows": len(history),
                "ours_s": round(t_ours, 4),
                "ours_cpu_s": round(cpu_ours, 4),
                "pandas_groupby_apply_s": round(t_ref, 4),
                "pandas_cpu_s": round(cpu_ref, 4),
                "speedup": round(t_ref / t_ours, 1),
                "speedup_cpu": round(cpu_ref / cpu_ours, 1),
                "max_relative_difference": worst,
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
