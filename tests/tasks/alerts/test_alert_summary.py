"""`tasks.alerts.summary` and ``apdb-pipeline alerts`` on alert files with known content."""

from __future__ import annotations

import subprocess
import sys

import fastavro
import numpy as np
import pytest

from tasks.alerts.summary import AlertFileError, summarize_alerts
from tasks.cli import main as pipeline_main

# The fields the summary reads, in the alert schema's shape (a subset of it).
_SOURCE = {
    "type": "record",
    "name": "DiaSource",
    "fields": [
        {"name": "visit", "type": "long"},
        {"name": "detector", "type": "int"},
        {"name": "band", "type": ["null", "string"]},
        {"name": "ra", "type": "double"},
        {"name": "dec", "type": "double"},
        {"name": "psfFlux", "type": ["null", "float"]},
        {"name": "psfFluxErr", "type": ["null", "float"]},
        {"name": "snr", "type": ["null", "float"]},
    ],
}
_SCHEMA = {
    "type": "record",
    "name": "alert",
    "namespace": "test",
    "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "diaSource", "type": _SOURCE},
        {"name": "prvDiaSources", "type": ["null", {"type": "array", "items": "DiaSource"}]},
        {
            "name": "diaObject",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "DiaObject",
                    "fields": [{"name": "diaObjectId", "type": "long"}],
                },
            ],
        },
        {
            "name": "ssSource",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "SSSource",
                    "fields": [{"name": "ssObjectId", "type": "long"}],
                },
            ],
        },
        {"name": "cutoutDifference", "type": ["null", "bytes"]},
    ],
}


def write_alerts(path, n: int, seed: int = 3) -> list[dict]:
    """Write ``n`` alerts in shuffled id order: every 7th is an SSO, every 3rd is new.

    Bands cycle g, r, i by id; every other alert has a difference cutout.
    """
    rng = np.random.default_rng(seed)
    alerts = []
    for k in rng.permutation(n):
        source = {
            "visit": 42,
            "detector": 5,
            "band": "gri"[k % 3],
            "ra": 10.0 + k * 1e-4,
            "dec": -5.0,
            "psfFlux": 1000.0 + k,
            "psfFluxErr": 10.0,
            "snr": 100.0,
        }
        sso = k % 7 == 0
        alerts.append(
            {
                "diaSourceId": 1000 + int(k),
                "diaSource": source,
                "prvDiaSources": None if sso or k % 3 == 0 else [dict(source)],
                "diaObject": None if sso else {"diaObjectId": 5000 + int(k)},
                "ssSource": {"ssObjectId": 77} if sso else None,
                "cutoutDifference": b"x" if k % 2 == 0 else None,
            }
        )
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(_SCHEMA), alerts)
    return alerts


def test_summary_totals_and_rows_sorted_by_source_id(tmp_path):
    path = tmp_path / "a.avro"
    alerts = write_alerts(path, 30)
    text = summarize_alerts(path, limit=None)
    lines = text.splitlines()
    assert lines[0] == f"{path}: 30 alert(s), schema test.alert"
    assert lines[1] == "visits/detectors: 42/5 (30); bands: g (10), i (10), r (10)"
    n_sso = sum(a["ssSource"] is not None for a in alerts)  # ids 0, 7, 14, 21, 28
    n_new = sum(a["diaObject"] is not None and not a["prvDiaSources"] for a in alerts)
    assert (n_sso, n_new) == (5, 8)  # new: multiples of 3 that are not multiples of 7
    assert lines[2] == (
        f"first detections of an object: {n_new}; Solar System: {n_sso}; "
        "cutouts: difference 15, science 0, template 0"
    )
    rows = lines[4:]
    ids = [int(row.split()[0]) for row in rows]
    assert ids == sorted(a["diaSourceId"] for a in alerts)
    assert rows[0].split()[1:3] == ["SSO", "77"]  # id 1000 is k = 0: an SSO
    assert rows[1].split()[1] == "5001"


def test_summary_limit_lists_the_lowest_ids(tmp_path):
    path = tmp_path / "a.avro"
    write_alerts(path, 30)
    lines = summarize_alerts(path, limit=4).splitlines()
    assert [int(row.split()[0]) for row in lines[4:8]] == [1000, 1001, 1002, 1003]
    assert lines[8] == "... 26 more (--all to list every alert)"
    assert len(lines) == 9


def test_unreadable_files_raise_our_error(tmp_path):
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"not avro at all")
    with pytest.raises(AlertFileError, match="not a readable Avro alert file"):
        summarize_alerts(bad)
    with pytest.raises(AlertFileError):
        summarize_alerts(tmp_path / "missing.avro")


def test_cli_prints_the_summary_and_one_line_errors(tmp_path, capsys):
    path = tmp_path / "a.avro"
    write_alerts(path, 25)
    assert pipeline_main(["alerts", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == summarize_alerts(path, limit=20)
    assert pipeline_main(["alerts", str(path), "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4 + 25
    assert pipeline_main(["alerts", str(tmp_path / "missing.avro")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("apdb-pipeline alerts: error:")


def test_piping_into_head_prints_no_traceback(tmp_path):
    path = tmp_path / "big.avro"
    write_alerts(path, 3000)  # ~300 kB of text: more than a pipe holds
    command = f"{sys.executable} -m tasks.cli alerts {path} --all | head -n 3"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.splitlines()[0].endswith("3000 alert(s), schema test.alert")
    assert len(result.stdout.splitlines()) == 3
    assert result.stderr == ""
    assert result.returncode == 1  # the writer's status: output cut short
