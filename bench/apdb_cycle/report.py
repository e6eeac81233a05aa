"""Summary and printed table of the APDB cycle benchmark."""

from __future__ import annotations

PHASES = ("objects", "sources", "forced", "store")
ALL = (*PHASES, "total")
REFERENCE_PREFIX = "lsst-dax-apdb"
OURS = "apdb (ours)"
OURS_SQLITE = "apdb (ours, sqlite)"
OURS_ROWS = "apdb (ours, row reads)"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _references(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(REFERENCE_PREFIX)]


def summarize(visits: list[dict], names: list[str]) -> dict:
    """Totals per phase and implementation, ratios, COPY limit, target checks.

    With several reference configurations the headline ratio is taken against
    the fastest one (smallest whole-cycle time).
    """
    summary: dict = {"per_implementation": {}, "all_reads_correct": True}
    for name in names:
        results = [v["results"][name] for v in visits]
        totals = {p: sum(r["times"][p] for r in results) for p in ALL}
        cpu = {p: sum(r.get("client_cpu_s", {}).get(p, 0.0) for r in results) for p in ALL}
        rows = sum(r["rows_stored"] for r in results)
        per_visit = [r["times"]["total"] for r in results]
        summary["per_implementation"][name] = {
            "sum_s": totals,
            "client_cpu_sum_s": cpu,
            "last_visit_s": results[-1]["times"] if results else None,
            "max_visit_total_s": max(per_visit) if per_visit else None,
            "mean_visit_total_s": sum(per_visit) / len(per_visit) if per_visit else None,
            "rows_stored": rows,
            "store_rows_per_s": rows / totals["store"] if totals["store"] > 0 else None,
            "reads_correct": all(r["ok"] for r in results),
        }
        summary["all_reads_correct"] &= all(r["ok"] for r in results)
    impl = summary["per_implementation"]
    refs = _references(names)
    if refs:
        summary["fastest_reference"] = min(refs, key=lambda n: impl[n]["sum_s"]["total"])
    if refs and OURS in names:
        ours = impl[OURS]
        summary["ratio_reference_over_ours"] = {
            ref: {p: _ratio(impl[ref]["sum_s"][p], ours["sum_s"][p]) for p in ALL} for ref in refs
        }
        summary["ratio_per_visit"] = {
            ref: [
                _ratio(v["results"][ref]["times"]["total"], v["results"][OURS]["times"]["total"])
                for v in visits
            ]
            for ref in refs
        }
        best = summary["fastest_reference"]
        summary["whole_cycle_ratio"] = summary["ratio_reference_over_ours"][best]["total"]
        summary["target_10x_met"] = (summary["whole_cycle_ratio"] or 0) >= 10.0
    if OURS in names and visits:
        summary["target_under_1s_per_visit_met"] = impl[OURS]["max_visit_total_s"] < 1.0
    limits = [v["copy_limit"] for v in visits if "copy_limit" in v]
    if limits:
        rows = sum(c["rows"] for c in limits)
        total = sum(c["total_s"] for c in limits)
        copy_only = sum(c["copy_s"] for c in limits)
        limit = {
            "rows": rows,
            "rows_per_s_encode_and_copy": rows / total,
            "rows_per_s_copy_only": rows / copy_only,
            "store_fraction_of_limit": {
                n: _ratio(impl[n]["store_rows_per_s"], rows / total) for n in names
            },
        }
        summary["copy_limit"] = limit
    return summary


def _short(name: str) -> str:
    if name == OURS:
        return "ours"
    if name == OURS_SQLITE:
        return "sqlite"
    if name == OURS_ROWS:
        return "ours-rows"
    mode = name[len(REFERENCE_PREFIX) :].strip(" []")
    return {"last_object_table": "ref-last", "baseline": "ref-base"}.get(mode, f"ref-{mode}")


def _fmt(x: float | None, width: int = 10, prec: int = 1) -> str:
    return f"{x:>{width}.{prec}f}" if x is not None else f"{'-':>{width}}"


def print_report(result: dict) -> None:
    """Print the per-visit table and the summary."""
    names = result["implementations"]
    visits = result["visits"]
    summary = result["summary"]
    env = result["environment"]
    refs = _references(names)
    best = summary.get("fastest_reference")
    print()
    print(
        f"PostgreSQL {env.get('postgres')} | lsst-dax-apdb {env.get('lsst-dax-apdb')} | "
        f"{env.get('cpu_count')} CPUs | commit {env.get('git_commit')}"
    )
    print("columns per implementation: obj/src/frc = reads, store, tot = sum (seconds)")
    head = f"{'visit':>5} {'nObj':>6} {'srcHist':>7} {'frcHist':>7} {'stored':>6} |"
    for name in names:
        head += f" {_short(name) + ':':<9}" + "".join(
            f"{p:>6}" for p in ("obj", "src", "frc", "store", "tot")
        )
        head += " |"
    if best and OURS in names:
        head += f" {'ratio':>6}"
    print(head)
    for v in visits:
        e = v["expected"]
        stored = sum(v["rows"].values())
        line = f"{v['visit']:>5} {e['objects']:>6} {e['sources']:>7} {e['forced']:>7} {stored:>6} |"
        for name in names:
            r = v["results"][name]
            line += " " * 10 + "".join(f"{r['times'][p]:>6.2f}" for p in ALL)
            line += " |" if r["ok"] else " !"
        if best and OURS in names:
            ratio = _ratio(
                v["results"][best]["times"]["total"], v["results"][OURS]["times"]["total"]
            )
            line += _fmt(ratio, 7)
        print(line)
    if not summary["all_reads_correct"]:
        print("! = a read returned a different number of rows than the truth")

    print()
    print(f"{'sum over visits (s)':<34}" + "".join(f"{p:>10}" for p in ALL))
    for name in names:
        s = summary["per_implementation"][name]["sum_s"]
        print(f"{name:<34}" + "".join(f"{s[p]:>10.2f}" for p in ALL))
    for ref in refs if OURS in names else []:
        r = summary["ratio_reference_over_ours"][ref]
        print(f"{'ratio ' + _short(ref) + '/ours':<34}" + "".join(_fmt(r[p]) for p in ALL))
    impl = summary["per_implementation"]
    if any(impl[n]["client_cpu_sum_s"]["total"] > 0 for n in names):
        print("client CPU time of the benchmark process (s; the rest: server work and waiting)")
        for name in names:
            s = impl[name]["client_cpu_sum_s"]
            print(f"{'  ' + name:<34}" + "".join(f"{s[p]:>10.2f}" for p in ALL))
    warmup = result.get("warmup_first_read_s") or {}
    if warmup:
        cells = ", ".join(f"{n} {t:.2f} s" for n, t in warmup.items())
        print(f"untimed warm-up (first DiaObject read, empty database): {cells}")
    compute = sum(v["compute_s"] for v in visits)
    loads = [v["load_average_1min"] for v in visits if "load_average_1min" in v]
    if loads:
        print(
            f"1-min load average at the visits: {min(loads):.1f} to {max(loads):.1f} "
            f"on {env.get('cpu_count')} CPUs"
        )
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
            f"whole cycle at V={len(visits)}: {best} / ours = "
            f"{summary['whole_cycle_ratio']:.1f}x "
            f"(target >= 10x: {'met' if summary['target_10x_met'] else 'NOT met'})"
        )
    if "target_under_1s_per_visit_met" in summary:
        print(
            "our cycle < 1 s on every visit: "
            + ("met" if summary["target_under_1s_per_visit_met"] else "NOT met")
        )
    if "copy_limit" in summary:
        c = summary["copy_limit"]
        print(
            "raw binary COPY into plain tables (same rows): "
            f"{c['rows_per_s_encode_and_copy']:,.0f} rows/s incl. numpy encoding, "
            f"{c['rows_per_s_copy_only']:,.0f} rows/s COPY only"
        )
        for name, frac in c["store_fraction_of_limit"].items():
            if frac is not None:
                print(f"  {name} store: {frac:.1%} of the COPY limit (encoding included)")
    stats = result.get("pg_stat_statements")
    if stats:
        for db, rows in stats.items():
            print(f"\ncostliest statements in {db} (pg_stat_statements):")
            for r in rows[:8]:
                q = " ".join(r["query"].split())[:150]
                print(f"  {r['total_ms']:>10.1f} ms {r['calls']:>6} calls {r['rows']:>9} rows  {q}")
