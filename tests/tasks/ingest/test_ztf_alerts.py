"""Real data: 121 ZTF alerts of 10 objects (fink-science 7.4.0) through catalog-only mode.

The alerts are ingested in time order with ``apdb-pipeline catalog --format
ztf``; the DiaObjects must group the detections exactly as ZTF's objectIds
do, the APDB light curves must equal the input fluxes, and every Rubin
alert we write must pass the schema check.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from apdb import Apdb
from tasks.alerts.io import read_alert_file, validate_alert
from tasks.alerts.schema import load_alert_schema
from tasks.cli import main
from tasks.ingest.ztf import read_ztf_alerts, ztf_dia_sources
from tasks.testing.realdata import require

ALERTS = "fink_science/data/alerts/20240606_iband_history.parquet"


@pytest.fixture(scope="module")
def ztf_file():
    return require("fink-science", ALERTS)


@pytest.fixture(scope="module")
def ztf_run(ztf_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ztf")
    url = f"sqlite:///{out / 'apdb.sqlite3'}"
    code = main(
        [
            "catalog",
            "--format",
            "ztf",
            str(ztf_file),
            "--apdb-url",
            url,
            "--alerts-dir",
            str(out / "alerts"),
        ]
    )
    assert code == 0
    detections = read_ztf_alerts(ztf_file)
    sources, membership = ztf_dia_sources(detections)
    with Apdb.from_url(url) as apdb:
        stored = apdb.get_dia_sources(
            Time(99999.0, format="mjd", scale="tai"),
            start_time=Time(40000.0, format="mjd", scale="tai"),
        )
        curves = {
            int(oid): apdb.get_light_curve(int(oid)) for oid in stored["diaObjectId"].unique()
        }
    return detections, sources, membership, stored, curves, out / "alerts"


def test_packets_hold_397_listings_of_286_distinct_detections(ztf_file):
    raw = pd.read_parquet(ztf_file, columns=["objectId", "candidate", "prv_candidates"])
    assert len(raw) == 121 and raw["objectId"].nunique() == 10
    pairs = {
        (oid, entry["candid"])
        for oid, cand, prv in raw.itertuples(index=False)
        for entry in [cand, *(prv if prv is not None else [])]
        if entry["candid"] is not None and entry["magpsf"] is not None
    }
    assert len(pairs) == 397  # (objectId, candid) pairs
    # the copy of a detection in a later packet's history has a candid rounded to a
    # multiple of 512 (float64) and a float32-rounded magnitude: same exposure, quadrant
    # and position; distinct detections collide on the rounded candids
    detections = read_ztf_alerts(ztf_file)
    assert len(detections) == 286 and detections["detection"].nunique() == 286
    rounded = [c for _, c in pairs if c % 512 == 0]
    assert len(rounded) > 100
    copies = []
    for oid, _, prv in raw.itertuples(index=False):
        for entry in prv if prv is not None else []:
            if entry["candid"] is None or entry["magpsf"] is None:
                continue
            same = detections[
                (detections["objectId"] == oid)
                & (detections["jd"] == entry["jd"])
                & (detections["rcid"] == entry["rcid"])
            ]
            d = (
                np.hypot(
                    (same["ra"] - entry["ra"]) * np.cos(np.radians(entry["dec"])),
                    same["dec"] - entry["dec"],
                )
                * 3600
            )
            k = int(np.argmin(d))
            copies.append((d.iloc[k], abs(same["magpsf"].iloc[k] - entry["magpsf"])))
    copies = np.array(copies)
    assert copies[:, 0].max() < 0.1 and copies[:, 1].max() < 1e-4


def test_dia_objects_group_detections_exactly_as_ztf_object_ids(ztf_run):
    _, sources, membership, stored, _, _ = ztf_run
    assert len(stored) == len(sources) == 286
    joined = membership.merge(stored[["diaSourceId", "diaObjectId"]], on="diaSourceId")
    assert len(joined) == len(membership)
    table = pd.crosstab(joined["objectId"], joined["diaObjectId"])
    # purity: each DiaObject holds one ZTF object's detections; completeness: each ZTF
    # object's detections are in one DiaObject
    purity = (table.max(axis=0) / table.sum(axis=0)).min()
    completeness = (table.max(axis=1) / table.sum(axis=1)).min()
    assert purity == 1.0 and completeness == 1.0
    assert table.shape == (10, 10)


def test_light_curves_equal_the_input_fluxes(ztf_run):
    detections, sources, _, stored, curves, _ = ztf_run
    first = detections.sort_values("inAlert", ascending=False).drop_duplicates("detection")
    sign = np.where(first["isdiffpos"].isin(["t", "1"]), 1.0, -1.0)
    expected = pd.DataFrame(
        {
            "detection": first["detection"].to_numpy(),
            "flux": sign * 10 ** ((31.4 - first["magpsf"].to_numpy(float)) / 2.5),
            "err": 10 ** ((31.4 - first["magpsf"].to_numpy(float)) / 2.5)
            * math.log(10)
            / 2.5
            * first["sigmapsf"].to_numpy(float),
            "mjd": Time(first["jd"].to_numpy(float), format="jd", scale="utc").tai.mjd
            + 15.0 / 86400.0,
            "ra": first["ra"].to_numpy(float),
        }
    )
    curve = pd.concat(curves.values(), ignore_index=True)
    assert len(curve) == 286 and set(curve["kind"]) == {"detection"}
    # link each stored measurement to its ZTF detection by time and position
    matched = curve.merge(
        sources[["diaSourceId", "ra"]],
        left_on="measurementId",
        right_on="diaSourceId",
        suffixes=("", "_in"),
    )
    matched = matched.sort_values("midpointMjdTai").reset_index(drop=True)
    expected = expected.sort_values(["mjd", "ra"]).reset_index(drop=True)
    matched = matched.sort_values(["midpointMjdTai", "ra"]).reset_index(drop=True)
    np.testing.assert_allclose(matched["midpointMjdTai"], expected["mjd"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(matched["ra"], expected["ra"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(matched["psfFlux"], expected["flux"], rtol=1e-6)
    np.testing.assert_allclose(matched["psfFluxErr"], expected["err"], rtol=1e-6)
    assert (matched["psfFlux"] < 0).sum() == (expected["flux"] < 0).sum() > 0


def test_rubin_alerts_pass_the_schema_check(ztf_run, caplog):
    _, sources, _, stored, _, alert_dir = ztf_run
    schema = load_alert_schema()
    files = sorted(alert_dir.glob("*.avro"))
    alerts = [a for f in files for a in read_alert_file(f)]
    assert len(alerts) == 286
    by_object = stored.set_index("diaSourceId")["diaObjectId"]
    for alert in alerts:
        validate_alert(alert, schema)
        src = alert["diaSource"]
        assert alert["cutoutDifference"] is None and alert["cutoutScience"] is None
        assert alert["diaObject"]["diaObjectId"] == by_object[src["diaSourceId"]]
        history = alert["prvDiaSources"] or []
        # ingested in time order: the history holds only earlier detections of the object
        assert all(h["midpointMjdTai"] < src["midpointMjdTai"] for h in history)
        assert all(h["diaObjectId"] == src["diaObjectId"] for h in history)
    # the last alert of each object carries its whole earlier light curve (< 12 months)
    last = {}
    for alert in alerts:
        oid = alert["diaSource"]["diaObjectId"]
        if (
            oid not in last
            or alert["diaSource"]["midpointMjdTai"] > last[oid]["diaSource"]["midpointMjdTai"]
        ):
            last[oid] = alert
    counts = stored.groupby("diaObjectId").size()
    for oid, alert in last.items():
        assert len(alert["prvDiaSources"] or []) == counts[oid] - 1


def test_avro_packets_read_like_the_parquet_archive(ztf_file, tmp_path):
    """The same 121 packets written as ZTF-style Avro files (one per alert) read the same."""
    import fastavro

    nullable = {"type": ["null", "double"], "default": None}
    fields = [
        {"name": "candid", "type": ["null", "long"], "default": None},
        {"name": "jd", "type": "double"},
        {"name": "fid", "type": "int"},
        {"name": "rcid", "type": ["null", "int"], "default": None},
        {"name": "field", "type": ["null", "int"], "default": None},
        {"name": "ra", **nullable},
        {"name": "dec", **nullable},
        {"name": "magpsf", **nullable},
        {"name": "sigmapsf", **nullable},
        {"name": "isdiffpos", "type": ["null", "string"], "default": None},
    ]
    candidate = {"type": "record", "name": "candidate", "fields": fields}
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "alert",
            "namespace": "ztf",
            "fields": [
                {"name": "objectId", "type": "string"},
                {"name": "candidate", "type": candidate},
                {
                    "name": "prv_candidates",
                    "type": ["null", {"type": "array", "items": "candidate"}],
                },
            ],
        }
    )
    names = [f["name"] for f in fields]

    def entry(values):
        out = {n: values[n] for n in names}
        # the broker's Parquet stores the history's candid as double: Avro wants a long
        out["candid"] = None if out["candid"] is None else int(out["candid"])
        return out

    raw = pd.read_parquet(ztf_file, columns=["objectId", "candidate", "prv_candidates"])
    for k, (oid, cand, prv) in enumerate(raw.itertuples(index=False)):
        record = {
            "objectId": oid,
            "candidate": entry(cand),
            "prv_candidates": None if prv is None else [entry(p) for p in prv],
        }
        with (tmp_path / f"{k:03d}.avro").open("wb") as handle:
            fastavro.writer(handle, schema, [record])
    from_avro = read_ztf_alerts(tmp_path)
    from_parquet = read_ztf_alerts(ztf_file)
    assert len(from_avro) == len(from_parquet) == 286
    key = ["objectId", "jd", "rcid", "ra", "dec"]
    a = from_avro.sort_values(key).reset_index(drop=True)
    b = from_parquet.sort_values(key).reset_index(drop=True)
    np.testing.assert_array_equal(a["candid"], b["candid"])
    np.testing.assert_allclose(a["magpsf"], b["magpsf"])
    sources_a, _ = ztf_dia_sources(from_avro)
    sources_b, _ = ztf_dia_sources(from_parquet)
    np.testing.assert_allclose(
        np.sort(sources_a["psfFlux"].to_numpy()), np.sort(sources_b["psfFlux"].to_numpy())
    )
