"""Summary and printed table of the APDB cycle benchmark."""

from __future__ import annotations

PHASES = ("objects", "sources", "forced", "store")
REFERENCE = "lsst-dax-apdb"
OURS = "apdb (ours)"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def summarize(visits: list[dict], names: list[str]) -> dict:
    """Totals per phase and implementation, ratios, COPY limit, target checks."""
    summary: dict = {"per_implementation": {}, "all_reads_correct": True}
    for name in names:
        results = [v["results"][name] for v in visits]
        totals = {p: sum(r["times"][p] for r in results) for p in (*PHASES, "total")}
        rows = sum(r["rows_stored"] for r in results)
        per_visit = [r["times"]["total"] for r in results]
        summary["per_implementation"][name] = {
            "sum_s": totals,
            "last_visit_s": results[-1]["times"] if results else None,
            "max_visit_total_s": max(per_visit) if per_visit else None,
            "mean_visit_total_s": sum(per_visit) / len(per_visit) if per_visit else None,
            "rows_stored": rows,
            "store_rows_per_s": rows / totals["store"] if totals["store"] > 0 else None,
            "reads_correct": all(r["ok"] for r in results),
        }
        summary["all_reads_correct"] &= all(r["ok"] for r in results)
    if REFERENCE in names and OURS in names:
        ref, ours = (summary["per_implementation"][n] for n in (REFERENCE, OURS))
        summary["ratio_reference_over_ours"] = {
            p: _ratio(ref["sum_s"][p], ours["sum_s"][p]) for p in (*PHASES, "total")
        }
        summary["ratio_per_visit"] = [
            _ratio(v["results"][REFERENCE]["times"]["total"], v["results"][OURS]["times"]["total"])
            for v in visits
        ]
        summary["whole_cycle_ratio"] = summary["ratio_reference_over_ours"]["total"]
        summary["target_10x_met"] = (summary["whole_cycle_ratio"] or 0) >= 10.0
    if OURS in names:
        ours = summary["per_implementation"][OURS]
        summary["target_under_1s_per_visit_met"] = ours["max_visit_total_s"] < 1.0
    limits = [v["copy_limit"] for v in visits if "copy_limit" in v]
    if limits:
        rows = sum(c["rows"] for c in limits)
        total = sum(c["total_s"] for c in limits)
        copy_only = sum(c["copy_s"] for c in limits)
        summary["copy_limit"] = {
            "rows": rows,
            "rows_per_s_encode_and_copy": rows / total,
            "rows_per_s_copy_only": rows / copy_only,
        }
        if OURS in names:
            ours_rate = summary["per_implementation"][OURS]["store_rows_per_s"]
            summary["copy_limit"]["ours_store_fraction_of_limit"] = _ratio(ours_rate, rows / total)
        if REFERENCE in names:
            ref_rate = summary["per_implementation"][REFERENCE]["store_rows_per_s"]
            summary["copy_limit"]["reference_store_fraction_of_limit"] = _ratio(
                ref_rate, rows / total
            )
    return summary


def _fmt(x: float | None, spec: str = "7.2f") -> str:
    return format(x, spec) if x is not None else " " * (int(spec.split(".")[0]) - 1) + "-"


def print_report(result: dict) -> None:
    """Print the per-visit table and the summary."""
    names = result["implementations"]
    visits = result["visits"]
    summary = result["summary"]
    env = result["environment"]
    print()
    print(
        f"PostgreSQL {env.get('postgres')} | lsst-dax-apdb {env.get('lsst-dax-apdb')} "
        f"(dia_object_index={result['config']['ref_index']}) | {env.get('cpu_count')} CPUs | "
        f"commit {env.get('git_commit')}"
    )
    print("times in seconds; objects/sources/forced = reads, store = one-transaction store")
    head = f"{'visit':>5} {'nObj':>6} {'srcHist':>7} {'frcHist':>7} {'stored':>6} |"
    for name in names:
        short = "ref" if name == REFERENCE else "ours"
        head += "".join(f" {short + ':' + p:>12}" for p in (*PHASES, "total")) + " |"
    if REFERENCE in names and OURS in names:
        head += f" {'ratio':>6}"
    print(head)
    for v in visits:
        e = v["expected"]
        stored = sum(v["rows"].values())
        line = f"{v['visit']:>5} {e['objects']:>6} {e['sources']:>7} {e['forced']:>7} {stored:>6} |"
        for name in names:
            r = v["results"][name]
            t = r["times"]
            line += "".join(f" {t[p]:>12.3f}" for p in (*PHASES, "total"))
            line += " |" if r["ok"] else " !"
        if REFERENCE in names and OURS in names:
            ratio = v["results"][REFERENCE]["times"]["total"] / v["results"][OURS]["times"]["total"]
            line += f" {ratio:>6.1f}"
        print(line)

    print()
    print(f"{'sum over visits':<18}" + "".join(f"{p:>10}" for p in (*PHASES, "total")))
    for name in names:
        s = summary["per_implementation"][name]["sum_s"]
        print(f"{name:<18}" + "".join(f"{s[p]:>10.2f}" for p in (*PHASES, "total")))
    if "ratio_reference_over_ours" in summary:
        r = summary["ratio_reference_over_ours"]
        cells = "".join(_fmt(r[p], "10.1f") for p in (*PHASES, "total"))
        print(f"{'ratio ref/ours':<18}{cells}")
    compute = sum(v["compute_s"] for v in visits)
    print(f"(shared DiaObject update computation, not in the totals: {compute:.2f} s)")

    print()
    for name in names:
        s = summary["per_implementation"][name]
        last = s["last_visit_s"]
        print(
            f"{name}: last visit {last['total']:.3f} s, "
            f"max visit {s['max_visit_total_s']:.3f} s, "
            f"mean visit {s['mean_visit_total_s']:.3f} s, "
            f"store {s['store_rows_per_s']:,.0f} rows/s, "
            f"reads {'correct' if s['reads_correct'] else 'WRONG ROW COUNTS'}"
        )
    if "whole_cycle_ratio" in summary:
        print(
            f"whole cycle at V={len(visits)}: reference/ours = {summary['whole_cycle_ratio']:.1f}x "
            f"(target >= 10x: {'met' if summary['target_10x_met'] else 'NOT met'})"
        )
    if "target_under_1s_per_visit_met" in summary:
        print(
            "our cycle < 1 s on every visit: "
            + ("met" if summary["target_under_1s_per_visit_met"] else "NOT met")
        )
    if "copy_limit" in summary:
        c = summary["copy_limit"]
        line = (
            "raw binary COPY into plain tables (same rows): "
            f"{c['rows_per_s_encode_and_copy']:,.0f} rows/s incl. numpy encoding, "
            f"{c['rows_per_s_copy_only']:,.0f} rows/s COPY only"
        )
        print(line)
        if "ours_store_fraction_of_limit" in c:
            print(f"our store reaches {c['ours_store_fraction_of_limit']:.0%} of the COPY limit")
        if "reference_store_fraction_of_limit" in c:
            print(f"reference store reaches {c['reference_store_fraction_of_limit']:.1%} of it")
    stats = result.get("pg_stat_statements")
    if stats:
        for db, rows in stats.items():
            print(f"\ncostliest statements in {db} (pg_stat_statements):")
            for r in rows[:8]:
                q = " ".join(r["query"].split())[:150]
                print(f"  {r['total_ms']:>10.1f} ms {r['calls']:>6} calls {r['rows']:>9} rows  {q}")
