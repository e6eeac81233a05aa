"""The throwaway Citus cluster (coordinator + 2 workers) used by tests and benchmarks."""

from __future__ import annotations

import psycopg
import pytest

from apdb.testing.citus import TemporaryCitus

pytestmark = pytest.mark.citus


def test_database_is_a_cluster_with_shards_on_both_workers(citus_cluster: TemporaryCitus):
    url = citus_cluster.create_database("cluster_check")
    try:
        assert url == citus_cluster.url("cluster_check")
        with psycopg.connect(citus_cluster.dsn("cluster_check"), autocommit=True) as conn:
            nodes = conn.execute(
                "SELECT nodeport, groupid FROM pg_dist_node ORDER BY groupid"
            ).fetchall()
            ports = [citus_cluster.coordinator.port] + [w.port for w in citus_cluster.workers]
            assert [p for p, _ in nodes] == ports
            assert nodes[0][1] == 0  # the coordinator is group 0
            conn.execute("CREATE TABLE t (part int, id bigint, PRIMARY KEY (part, id))")
            conn.execute("SELECT create_distributed_table('t', 'part', shard_count => 8)")
            conn.execute("INSERT INTO t SELECT i % 50, i FROM generate_series(1, 500) i")
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 500
            max_prepared = conn.execute("SHOW max_prepared_transactions").fetchone()[0]
            assert int(max_prepared) > 0
        # The 8 shards are split between the workers (Citus hides shards from
        # pg_class unless told otherwise).
        counts = citus_cluster.worker_rows(
            "cluster_check",
            "SELECT count(*) FROM pg_class WHERE relname ~ '^t_[0-9]+$' AND relkind = 'r'",
        )
        assert [c[0][0] for c in counts] == [4, 4]
    finally:
        citus_cluster.drop_database("cluster_check")
    for node in citus_cluster.nodes:
        assert "cluster_check" not in node.list_databases()


def test_every_node_stops_on_error(citus_cluster: TemporaryCitus):
    del citus_cluster  # Citus installed (or skip/fail like the others)
    with pytest.raises(RuntimeError), TemporaryCitus(workers=1) as cluster:
        dirs = [node.tmpdir for node in cluster.nodes]
        assert cluster.running
        raise RuntimeError("boom")
    assert not cluster.running
    assert all(not d.exists() for d in dirs)
    cluster.stop()  # idempotent


def test_a_worker_needs_a_worker():
    with pytest.raises(ValueError):
        TemporaryCitus(workers=0)
