"""Association benchmarks: speed (bench_association, bench_stats) and quality (fields)."""
