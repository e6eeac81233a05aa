"""PackageAlertsTask end to end on a synthetic visit with known truth."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.nddata import CCDData

from tasks.alerts import PackageAlertsConfig, PackageAlertsTask
from tasks.alerts.io import AlertValidationError, read_alert_file, validate_alert
from tests.tasks.alerts.conftest import CALIB, DETECTOR, VISIT, make_scene


def run_task(tmp_path, scene, **config):
    config.setdefault("doValidateEveryAlert", True)  # fastavro decodes and re-encodes each alert
    task = PackageAlertsTask(PackageAlertsConfig(alertWriteLocation=str(tmp_path), **config))
    result = task.run(
        scene.sources,
        scene.objects,
        scene.src_history,
        scene.forced_history,
        scene.diffim,
        scene.calexp,
        scene.template,
        ssSrc=scene.ss_sources,
    )
    return task, result


def test_one_alert_per_source_read_back_with_plain_fastavro(tmp_path, scene):
    task, result = run_task(tmp_path, scene)
    assert result.alertFile == tmp_path / f"visit_{VISIT:07d}_det_{DETECTOR:03d}.avro"
    with open(result.alertFile, "rb") as fh:
        reader = fastavro.reader(fh)
        assert (
            reader.writer_schema["name"]
            == f"lsst.v{task.alertSchema.version.replace('.', '_')}.alert"
        )
        alerts = list(reader)
    assert result.nAlerts == len(alerts) == len(scene.sources)
    assert [a["diaSourceId"] for a in alerts] == scene.sources["diaSourceId"].tolist()
    for alert in alerts:
        validate_alert(alert, task.alertSchema)
        assert alert["diaSource"]["diaSourceId"] == alert["diaSourceId"]
        assert alert["diaSource"]["visit"] == VISIT


def test_every_filled_field_survives(tmp_path, scene):
    """fastavro drops unknown keys: every input value that has a field must be in the file."""
    task, result = run_task(tmp_path, scene)
    alerts = read_alert_file(result.alertFile)
    spec = task.alertSchema.records["diaSource"]
    types = {f.name: f.type for f in spec.fields}
    filled = [c for c in scene.sources.columns if c in types]
    assert len(filled) == len(scene.sources.columns) - 1  # all but pixelId
    for alert, (_, row) in zip(alerts, scene.sources.iterrows(), strict=True):
        for column in filled:
            got, want = alert["diaSource"][column], row[column]
            if pd.isna(want):
                assert got is None, column
            elif types[column] == "float":  # float32 in Avro
                assert got == pytest.approx(want, rel=1e-6), column
            else:
                assert got == want, column
        assert "pixelId" not in alert["diaSource"]
        # fields we do not fill are null, required counters are 0
        assert alert["diaSource"]["trailFlux"] is None
        assert alert["diaSource"]["trailNdata"] == 0
    assert task.metadata["unusedColumns"]["diaSource"] == ["pixelId"]


def test_objects_histories_and_sso(tmp_path, scene):
    _, result = run_task(tmp_path, scene)
    alerts = {a["diaSourceId"]: a for a in read_alert_file(result.alertFile)}
    ids = scene.sources["diaSourceId"].to_numpy()
    old = alerts[ids[1]]
    assert old["diaObject"]["diaObjectId"] == scene.objects["diaObjectId"].iloc[1]
    assert old["diaObject"]["r_psfFluxMean"] == pytest.approx(2.0)
    assert old["diaObject"]["u_psfFluxMean"] is None
    # history: previous visits only, the current source excluded, time ordered
    prv = old["prvDiaSources"]
    assert [p["visit"] for p in prv] == [1100, 1000]
    assert ids[1] not in [p["diaSourceId"] for p in prv]
    assert [p["psfFlux"] for p in prv] == [200.0, 100.0]
    forced = old["prvDiaForcedSources"]
    assert [f["visit"] for f in forced] == [1100, 1000]
    assert forced[0]["psfFlux"] is None  # NaN → null
    # a new object: empty histories, not null
    new = alerts[ids[0]]
    assert new["prvDiaSources"] == [] and new["prvDiaForcedSources"] == []
    assert new["diaObject"]["diaObjectId"] == ids[0]
    # the Solar System source: an SSSource and no DiaObject
    sso = alerts[ids[4]]
    assert sso["diaObject"] is None and sso["prvDiaSources"] is None
    assert sso["ssSource"]["ssObjectId"] == 42
    assert sso["diaSource"]["ssObjectId"] == 42 and sso["diaSource"]["diaObjectId"] is None
    assert -90 <= sso["ssSource"]["eclBeta"] <= 90
    # ecliptic latitude from the textbook rotation by the obliquity of J2000
    ra, dec, eps = np.radians([sso["diaSource"]["ra"], sso["diaSource"]["dec"], 23.4393])
    beta = np.degrees(np.arcsin(np.sin(dec) * np.cos(eps) - np.cos(dec) * np.sin(eps) * np.sin(ra)))
    assert sso["ssSource"]["eclBeta"] == pytest.approx(beta, abs=0.01)


def test_cutouts_calibrated_with_flux_and_wcs(tmp_path, scene):
    _, result = run_task(tmp_path, scene)
    alerts = read_alert_file(result.alertFile)
    for k, alert in enumerate(alerts):
        for kind in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
            assert alert[kind] is not None, (k, kind)
        ccd = CCDData.read(io.BytesIO(alert["cutoutDifference"]), format="fits")
        assert str(ccd.unit) == "nJy"
        size = int(np.clip(scene.sources["bboxSize"].iloc[k], 30, 102))
        assert ccd.shape == (size, size)
        # the local WCS puts the source's sky position on its pixel position in the cutout
        px, py = ccd.wcs.world_to_pixel_values(alert["diaSource"]["ra"], alert["diaSource"]["dec"])
        x0, y0 = ccd.meta["CUTMINX"], ccd.meta["CUTMINY"]
        assert px + x0 == pytest.approx(alert["diaSource"]["x"], abs=1e-3)
        assert py + y0 == pytest.approx(alert["diaSource"]["y"], abs=1e-3)
        # pixel sum in a 5-sigma aperture agrees with the true (and measured) flux
        yy, xx = np.mgrid[: ccd.shape[0], : ccd.shape[1]]
        aperture = np.hypot(xx - px, yy - py) < 10.0
        good = aperture & ~ccd.mask
        if good.sum() == aperture.sum():  # not cut by the edge
            flux = float(np.nansum(ccd.data[good], dtype=np.float64))
            err = float(np.sqrt(np.nansum(ccd.uncertainty.array[good], dtype=np.float64)))
            assert flux == pytest.approx(scene.truth_flux_njy[k], abs=5 * err + 1e-3 * flux)
            assert err == pytest.approx(CALIB * np.sqrt(good.sum()), rel=1e-5)


def test_edge_source_gets_partial_cutout(tmp_path, scene):
    _, result = run_task(tmp_path, scene)
    alert = read_alert_file(result.alertFile)[3]  # the source at x = 5.2
    ccd = CCDData.read(io.BytesIO(alert["cutoutDifference"]), format="fits")
    assert ccd.meta["CUTMINX"] < 0
    outside = slice(0, -ccd.meta["CUTMINX"])
    assert np.isnan(ccd.data[:, outside]).all() and ccd.mask[:, outside].all()
    assert np.isfinite(ccd.data[:, -ccd.meta["CUTMINX"] :]).all()


def test_source_off_image_and_missing_template_give_null_cutouts(tmp_path, caplog):
    scene = make_scene()
    scene.sources.loc[2, "ra"], scene.sources.loc[2, "dec"] = scene.diffim.pixel_to_sky(400.0, 40.0)
    task = PackageAlertsTask(PackageAlertsConfig(alertWriteLocation=str(tmp_path)))
    with caplog.at_level("DEBUG", logger="tasks.packageAlerts"):
        result = task.run(
            scene.sources,
            scene.objects,
            scene.src_history,
            scene.forced_history,
            scene.diffim,
            scene.calexp,
            None,
        )
    alerts = read_alert_file(result.alertFile)
    assert all(a["cutoutTemplate"] is None for a in alerts)
    assert alerts[2]["cutoutDifference"] is None and alerts[2]["cutoutScience"] is None
    assert alerts[0]["cutoutDifference"] is not None
    assert result.cutoutsMissing == {"difference": 1, "science": 1, "template": 5}
    assert "outside the exposure" in str(task.metadata["cutoutReasons"]["difference"])


def test_rubin_methods_match_the_fast_path(tmp_path, scene):
    task, result = run_task(tmp_path, scene)
    alert = read_alert_file(result.alertFile)[1]
    src = alert["diaSource"]
    extent = task.createDiaSourceExtent(src["bboxSize"])
    assert extent == (40, 40)
    assert task.createDiaSourceExtent(3) == (30, 30)
    assert task.createDiaSourceExtent(5000) == (102, 102)
    ccd = task.createCcdDataCutout(
        scene.diffim, (src["ra"], src["dec"]), extent, scene.diffim.photo_calib, src["diaSourceId"]
    )
    assert task.streamCcdDataToBytes(ccd) == alert["cutoutDifference"]
    # the general path (any CCDData) writes through astropy and reads back the same
    ccd.wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    back = CCDData.read(io.BytesIO(task.streamCcdDataToBytes(ccd)), format="fits")
    np.testing.assert_array_equal(back.data, ccd.data)
    # local transform: the pixel scale of the parent WCS (0.2 arcsec) and its rotation
    matrix = task.makeLocalTransformMatrix(
        scene.diffim.wcs, (src["x"], src["y"]), (src["ra"], src["dec"])
    )
    assert abs(np.linalg.det(matrix)) ** 0.5 * 3600 == pytest.approx(0.2, rel=1e-6)
    np.testing.assert_allclose(matrix, scene.diffim.wcs.pixel_scale_matrix, rtol=1e-4, atol=1e-12)


def test_make_alert_dict_from_frames(scene):
    task = PackageAlertsTask()
    src = scene.sources.iloc[[0]]
    alert = task.makeAlertDict(
        src["diaSourceId"].iloc[0],
        src,
        scene.objects.iloc[[0]],
        scene.src_history.iloc[:0],
        None,
        None,
        None,
        None,
    )
    validate_alert(alert, task.alertSchema)
    assert (
        task.alertSchema.deserialize(task.alertSchema.serialize(alert))["diaObject"]["diaObjectId"]
        == scene.objects["diaObjectId"].iloc[0]
    )


def test_invalid_alerts_are_refused_not_trimmed(tmp_path, scene):
    task = PackageAlertsTask()
    alert = task.makeAlertDict(1, scene.sources.iloc[[0]], None, None, None, None, None, None)
    alert["diaSource"]["myNewColumn"] = 1.0  # fastavro would drop it silently
    with pytest.raises(AlertValidationError, match="diaSource.myNewColumn"):
        validate_alert(alert, task.alertSchema)
    with pytest.raises(ValueError):
        task.alertSchema.serialize(alert)
    del alert["diaSource"]["myNewColumn"]
    alert["diaSource"]["ra"] = "not a number"
    with pytest.raises(AlertValidationError):
        validate_alert(alert, task.alertSchema)


def test_missing_required_column_is_a_clear_error(tmp_path, scene):
    from tasks.alerts.schema import AlertSchemaError

    bad = scene.sources.drop(columns=["ra"])
    task = PackageAlertsTask(PackageAlertsConfig(alertWriteLocation=str(tmp_path)))
    with pytest.raises(AlertSchemaError, match="diaSource.ra"):
        task.run(bad, scene.objects, None, None, scene.diffim, None, None)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_empty_visit_writes_an_empty_file(tmp_path, scene):
    task = PackageAlertsTask(PackageAlertsConfig(alertWriteLocation=str(tmp_path)))
    result = task.run(
        scene.sources.iloc[:0], None, None, None, scene.diffim, None, None, visit=5, detector=1
    )
    assert result.nAlerts == 0 and read_alert_file(result.alertFile) == []


def test_write_alert_file_is_strict_and_atomic(tmp_path, scene):
    from tasks.alerts.io import write_alert_file

    task = PackageAlertsTask()
    good = task.makeAlertDict(7, scene.sources.iloc[[0]], None, None, None, None, None, None)
    path = write_alert_file(tmp_path / "a.avro", [good], task.alertSchema, codec="deflate")
    assert read_alert_file(path)[0]["diaSource"]["ra"] == pytest.approx(good["diaSource"]["ra"])
    bad = dict(good, extraField=1)
    with pytest.raises(AlertValidationError, match="extraField"):
        write_alert_file(tmp_path / "b.avro", [good, bad], task.alertSchema)
    assert not (tmp_path / "b.avro").exists()


def test_deflate_files_read_back(tmp_path, scene):
    _, plain = run_task(tmp_path / "plain", scene)
    _, deflated = run_task(tmp_path / "deflate", scene, avroCodec="deflate")
    a, b = read_alert_file(deflated.alertFile), read_alert_file(plain.alertFile)
    for alert in a + b:  # processing times differ between the runs
        alert["diaSource"].pop("timeProcessedMjdTai")
    assert a == b
    assert deflated.alertFile.stat().st_size < plain.alertFile.stat().st_size
