"""Summaries of a run (per implementation and W) and the printed table."""

from __future__ import annotations

from collections import Counter

import numpy as np

PHASES = ("objects", "sources", "forced", "store")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000.0) if values else float("nan")


def _kind(error: str) -> str:
    """``Type`` (and the driver's type) of an error description."""
    parts = [p.split(":")[0].strip() for p in error.split(" <- ")]
    return " <- ".join(parts)


def summarize(kind: str, workers: int, raw: dict) -> dict:
    """Throughput, latency percentiles, CPU, failures and integrity of one run."""
    ok = [r for r in raw["records"] if "error" not in r]
    failed = [r for r in raw["records"] if "error" in r]
    n = len(raw["records"])
    phases = {}
    for ph in (*PHASES, "cycle"):
        vals = [sum(r[p] for p in PHASES) if ph == "cycle" else r[ph] for r in ok]
        phases[ph] = {"p50_ms": _pct(vals, 50), "p95_ms": _pct(vals, 95)}
    # Rows that must be there: before + what the successful stores wrote.
    before, after = raw["rows_before"], raw["rows_after"]
    stored_src = sum(r["n_stored"][1] for r in ok)
    stored_frc = sum(r["n_stored"][2] for r in ok)
    versions = {(int(i), r["visit"]) for r in ok for i in r["object_ids"]}
    expected = {
        "DiaObject": before["DiaObject"] + len(versions),
        "DiaSource": before["DiaSource"] + stored_src,
        "DiaForcedSource": before["DiaForcedSource"] + stored_frc,
    }
    lost = {t: max(0, expected[t] - after[t]) for t in expected}
    extra = {t: max(0, after[t] - expected[t]) for t in expected}
    integrity = dict(raw["integrity"])
    integrity_errors = sum(lost.values()) + sum(extra.values()) + sum(integrity.values())
    return {
        "kind": kind,
        "workers": workers,
        "cycles": n,
        "completed": len(ok),
        "failures": len(failed),
        "failure_kinds": dict(Counter(_kind(r["error"]) for r in failed)),
        "failure_examples": sorted({r["error"] for r in failed})[:5],
        "wall_s": raw["wall_s"],
        "dv_per_s": len(ok) / raw["wall_s"] if raw["wall_s"] > 0 else float("nan"),
        "attempts_per_s": n / raw["wall_s"] if raw["wall_s"] > 0 else float("nan"),
        "phases_ms": phases,
        "client_cpu_ms_per_dv": 1000.0 * raw["client_cpu_s"] / max(n, 1),
        "server_cpu_ms_per_dv": 1000.0 * raw["server_cpu_s"] / max(n, 1),
        "rows_expected": expected,
        "rows_after": after,
        "lost_rows": lost,
        "extra_rows": extra,
        "integrity": integrity,
        "integrity_errors": integrity_errors,
        "mean_rows_stored": [
            float(np.mean([r["n_stored"][k] for r in ok])) if ok else 0.0 for k in range(3)
        ],
        "mean_rows_read": [
            float(np.mean([r["n_read"][k] for r in ok])) if ok else 0.0 for k in range(3)
        ],
    }


def print_report(results: list[dict]) -> None:
    """Markdown table of every run, then the ours/reference ratios per W."""
    head = (
        "| W | implementation | det-visits/s | attempts/s | failures | integrity errors | "
        + " | ".join(f"{p} p50/p95 ms" for p in (*PHASES, "cycle"))
        + " | client CPU ms/dv | server CPU ms/dv |"
    )
    print()
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        ph = " | ".join(
            f"{r['phases_ms'][p]['p50_ms']:.0f} / {r['phases_ms'][p]['p95_ms']:.0f}"
            for p in (*PHASES, "cycle")
        )
        print(
            f"| {r['workers']} | {r['kind']} | {r['dv_per_s']:.2f} | {r['attempts_per_s']:.2f} | "
            f"{r['failures']} | "
            f"{r['integrity_errors']} | {ph} | {r['client_cpu_ms_per_dv']:.0f} | "
            f"{r['server_cpu_ms_per_dv']:.0f} |"
        )
    print()
    by = {(r["kind"], r["workers"]): r for r in results}
    for w in sorted({r["workers"] for r in results}):
        ours, ref = by.get(("ours", w)), by.get(("reference", w))
        if ours and ref and ref["dv_per_s"] > 0:
            ratio = ours["dv_per_s"] / ref["dv_per_s"]
            tried = ours["attempts_per_s"] / ref["attempts_per_s"]
            print(
                f"W={w}: ours / reference detector-visits/s = {ratio:.2f} "
                f"(attempts/s, failed ones included: {tried:.2f})"
            )
    for r in results:
        if r["failures"] or r["integrity_errors"]:
            print(
                f"W={r['workers']} {r['kind']}: failures {r['failure_kinds']}, lost "
                f"{r['lost_rows']}, extra {r['extra_rows']}, integrity {r['integrity']}"
            )
            for e in r["failure_examples"]:
                print(f"    {e}")
