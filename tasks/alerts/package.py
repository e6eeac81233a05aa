"""PackageAlertsTask: DiaSources, their histories and cutouts as Avro alerts.

One alert per DiaSource of the visit, in Rubin's alert schema (from
``lsst-alert-packet``): the source, its DiaObject, the object's previous
DiaSources and DiaForcedSources (12-month history, this visit excluded),
the SSSource for Solar-System sources (which have no DiaObject), and three
cutouts (difference, science, template) as FITS files of calibrated
`~astropy.nddata.CCDData` with variance, mask and a local linear WCS.

Each alert is serialised once, with fastavro's strict mode (a field we fill
that the schema lacks is an error, never silently dropped); the bytes go
into one Avro container file per visit/detector under
``alertWriteLocation`` and, optionally, to Kafka.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.time import Time
from astropy.wcs import WCS
from pydantic import Field

from tasks.alerts.ccd import ccd_data_to_fits_bytes, cutout_to_ccd_data
from tasks.alerts.cutouts import (
    BAD_PLANES,
    CutoutMaker,
    cutout_sizes,
    local_transform_matrices,
)
from tasks.alerts.encoder import encode_array, encode_bytes, encode_record, zigzag
from tasks.alerts.history import prepare_inputs
from tasks.alerts.io import AlertFileWriter, AlertValidationError, alert_file_name, validate_alert
from tasks.alerts.records import frame_to_records
from tasks.alerts.schema import AlertSchema, load_alert_schema
from tasks.core.base import Result, Task, TaskConfig, TaskError

__all__ = ["PackageAlertsConfig", "PackageAlertsResult", "PackageAlertsTask"]

_CUTOUT_FIELDS = (
    ("difference", "cutoutDifference"),
    ("science", "cutoutScience"),
    ("template", "cutoutTemplate"),
)


class PackageAlertsConfig(TaskConfig):
    """Configuration of `PackageAlertsTask`."""

    schemaVersion: str | None = Field(
        None,
        description="Alert schema version MAJOR.MINOR; the latest of lsst-alert-packet if None.",
    )
    schemaId: int | None = Field(
        None, description="Schema id in Kafka message headers; lsst-alert-packet's id if None."
    )
    alertWriteLocation: str = Field("alerts", description="Directory of the per-visit alert files.")
    doWriteAlerts: bool = Field(True, description="Write one Avro file per visit/detector.")
    doProduceAlerts: bool = Field(
        False, description="Produce alerts to Kafka (configured by the AP_KAFKA_* environment)."
    )
    doWriteFailedAlerts: bool = Field(
        True, description="Write alerts that Kafka did not accept under alertWriteLocation/failed."
    )
    doPackageCutouts: bool = Field(True, description="Attach difference/science/template cutouts.")
    minCutoutSize: int = Field(30, ge=1, description="Smallest cutout side (pixels).")
    maxCutoutSize: int = Field(102, ge=1, description="Largest cutout side (pixels).")
    cutoutBadMaskPlanes: tuple[str, ...] = Field(
        BAD_PLANES, description="Mask planes flagged as invalid in the cutouts' CCDData mask."
    )
    doValidateEveryAlert: bool = Field(
        False,
        description=(
            "Also decode every encoded alert with fastavro and check it re-encodes identically "
            "(always done for the first alert of each visit)."
        ),
    )
    avroCodec: Literal["null", "deflate"] = Field("null", description="Avro file block codec.")
    kafkaBatchSize: int = Field(1000, ge=1, description="Messages queued between delivery polls.")
    kafkaFlushTimeout: float = Field(30.0, gt=0, description="Seconds to wait for deliveries.")


@dataclass
class PackageAlertsResult(Result):
    """What `PackageAlertsTask.run` wrote for one visit/detector.

    Attributes
    ----------
    alertFile : `pathlib.Path` or `None`
        The Avro alert file (`None` when no file was written).
    nAlerts : `int`
        Alerts packaged.
    cutoutsMissing : `dict` [`str`, `int`]
        Cutout kind (``difference``, ``science``, ``template``) → alerts
        without that cutout.
    nDelivered : `int`
        Alerts delivered to Kafka (0 when not producing).
    failedAlertFile : `pathlib.Path` or `None`
        Alerts Kafka did not take, written aside for a later retry.
    """

    alertFile: Path | None
    nAlerts: int
    cutoutsMissing: dict[str, int] = dataclasses.field(default_factory=dict)
    nDelivered: int = 0
    failedAlertFile: Path | None = None


class PackageAlertsTask(Task):
    """Package DiaSources, DiaObjects, histories and cutouts into Avro alerts."""

    ConfigClass = PackageAlertsConfig
    _DefaultName = "packageAlerts"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: PackageAlertsConfig
        self.alertSchema: AlertSchema = load_alert_schema(self.config.schemaVersion)
        self._producer = None

    # -- the Rubin-named building blocks -------------------------------------
    def createDiaSourceExtent(self, bboxSize: int) -> tuple[int, int]:
        """Return the cutout extent ``(width, height)`` for a source's ``bboxSize``.

        The side is ``bboxSize`` clamped to ``[minCutoutSize, maxCutoutSize]``.
        """
        side = int(cutout_sizes(bboxSize, self.config.minCutoutSize, self.config.maxCutoutSize))
        return (side, side)

    def makeLocalTransformMatrix(
        self, wcs: WCS, center: tuple[float, float], skyCenter: SkyCoord | tuple[float, float]
    ) -> np.ndarray:
        """Return the local linear approximation of ``wcs`` at ``center`` (degrees/pixel).

        Parameters
        ----------
        wcs : `astropy.wcs.WCS`
            Parent-pixel to ICRS WCS.
        center : `tuple` [`float`, `float`]
            Pixel position ``(x, y)``.
        skyCenter : `SkyCoord` or `tuple`
            Tangent point (normally the sky position of ``center``).

        Returns
        -------
        matrix : `numpy.ndarray`
            2×2 CD matrix: standard coordinates (east, north) in degrees per
            pixel step in x and y.
        """
        ra, dec = _radec(skyCenter)
        return local_transform_matrices(wcs, [center[0]], [center[1]], [ra], [dec])[0]

    def createCcdDataCutout(
        self,
        image: Any,
        skyCenter: SkyCoord | tuple[float, float],
        extent: tuple[int, int] | int,
        photoCalib: Any = None,
        srcId: int = 0,
    ) -> CCDData | None:
        """Cut a calibrated `CCDData` (nJy, variance, mask, local WCS) out of an exposure.

        Parameters
        ----------
        image : `tasks.images.Exposure`
            Exposure to cut from.
        skyCenter : `SkyCoord` or `tuple`
            Centre of the cutout (ra, dec degrees).
        extent : `tuple` [`int`, `int`] or `int`
            Cutout size in pixels (a square side is used: the larger one).
        photoCalib : `tasks.images.PhotoCalib`, optional
            Calibration; the exposure's own by default.
        srcId : `int`, optional
            DiaSource id, for log messages.

        Returns
        -------
        cutout : `astropy.nddata.CCDData` or `None`
            `None` (with a logged reason) when the centre is off the image or
            the cutout has no valid pixel; partial cutouts are NaN-padded.
        """
        size = max(extent) if isinstance(extent, tuple | list) else int(extent)
        maker = self._maker(image, "cutout", photoCalib)
        ra, dec = _radec(skyCenter)
        x, y = maker.positions(np.array([ra]), np.array([dec]))
        cd = maker.local_wcs(x, y, np.array([ra]), np.array([dec]))[0]
        cut = maker.cut(float(x[0]), float(y[0]), int(size), ra, dec, cd, srcId)
        if cut is None:
            return None
        return cutout_to_ccd_data(cut)

    def streamCcdDataToBytes(self, cutout: CCDData) -> bytes:
        """Serialise a cutout into the bytes of a FITS file.

        Cutouts with a 2-axis TAN WCS without distortion (those of
        `createCcdDataCutout`) take the fast writer; anything else goes
        through ``CCDData.write``.
        """
        return ccd_data_to_fits_bytes(cutout)

    def makeAlertDict(
        self,
        alertId: int,
        diaSource: dict[str, Any] | pd.DataFrame,
        diaObject: dict[str, Any] | pd.DataFrame | None,
        objDiaSrcHistory: list[dict[str, Any]] | pd.DataFrame | None,
        objDiaForcedSources: list[dict[str, Any]] | pd.DataFrame | None,
        diffImCutout: CCDData | bytes | None,
        calexpCutout: CCDData | bytes | None,
        templateCutout: CCDData | bytes | None,
        ssSource: dict[str, Any] | pd.DataFrame | None = None,
    ) -> dict[str, Any]:
        """Assemble one alert record.

        Parameters
        ----------
        alertId : `int`
            The ``diaSourceId`` of the alert's source.
        diaSource, diaObject, ssSource : `dict` or one-row `pandas.DataFrame`
            The records (a DataFrame is converted with the schema's fields).
        objDiaSrcHistory, objDiaForcedSources : `list` of `dict` or `pandas.DataFrame`
            Previous DiaSources/DiaForcedSources of the object (`None` when
            the source has no DiaObject).
        diffImCutout, calexpCutout, templateCutout : `CCDData`, `bytes` or `None`
            Cutouts, serialised here when given as `CCDData`.

        Returns
        -------
        alert : `dict`
            Exactly the fields of the alert schema.
        """
        recs = self.alertSchema.records

        def one(value: Any, name: str) -> dict[str, Any] | None:
            if value is None or isinstance(value, dict):
                return value
            rows = frame_to_records(_frame(value), recs[name], self._defaults(name))
            if len(rows) != 1:
                raise TaskError(f"makeAlertDict needs one {name} row, got {len(rows)}")
            return rows[0]

        def many(value: Any, name: str) -> list[dict[str, Any]] | None:
            if value is None or isinstance(value, list):
                return value
            return frame_to_records(_frame(value), recs[name], self._defaults(name))

        def cut(value: Any) -> bytes | None:
            if value is None or isinstance(value, bytes):
                return value
            return self.streamCcdDataToBytes(value)

        return {
            "diaSourceId": int(alertId),
            "observation_reason": None,
            "target_name": None,
            "diaSource": one(diaSource, "diaSource"),
            "prvDiaSources": many(objDiaSrcHistory, "diaSource"),
            "prvDiaForcedSources": many(objDiaForcedSources, "diaForcedSource"),
            "diaObject": one(diaObject, "diaObject"),
            "ssSource": one(ssSource, "ssSource"),
            "mpc_orbits": None,
            "cutoutDifference": cut(diffImCutout),
            "cutoutScience": cut(calexpCutout),
            "cutoutTemplate": cut(templateCutout),
        }

    # -- run -------------------------------------------------------------------
    def run(
        self,
        diaSourceCat: pd.DataFrame,
        diaObjectCat: pd.DataFrame | None,
        diaSrcHistory: pd.DataFrame | None,
        diaForcedSources: pd.DataFrame | None,
        diffIm: Any,
        calexp: Any = None,
        template: Any = None,
        ssSrc: pd.DataFrame | None = None,
        visit: int | None = None,
        detector: int | None = None,
    ) -> PackageAlertsResult:
        """Package the visit's DiaSources into alerts; write and/or produce them.

        Parameters
        ----------
        diaSourceCat : `pandas.DataFrame`
            This visit's DiaSources (APDB column names), one alert each.
        diaObjectCat : `pandas.DataFrame` or `None`
            New and updated DiaObjects of those sources.
        diaSrcHistory, diaForcedSources : `pandas.DataFrame` or `None`
            12-month histories of the objects (rows of this visit are ignored).
        diffIm, calexp, template : `tasks.images.Exposure` or `None`
            Difference, science and template exposures for the cutouts; a
            missing one gives null cutouts of that kind.
        ssSrc : `pandas.DataFrame`, optional
            SSSources of this visit (by ``diaSourceId``).
        visit, detector : `int`, optional
            Defaults: the catalogue's columns, then the difference image's.

        Returns
        -------
        result : `PackageAlertsResult`
            The alert file, the counts and the missing cutouts.
        """
        visit, detector = self._visit_detector(diaSourceCat, diffIm, visit, detector)
        with self.timer("prepare"):
            inputs = prepare_inputs(
                self.alertSchema,
                diaSourceCat,
                diaObjectCat,
                diaSrcHistory,
                diaForcedSources,
                ssSrc,
                visit,
                self._defaults,
                self.log,
            )
        self._report_unused(inputs.unused)
        sources = inputs.sources
        n = len(sources)
        makers = self._cutout_makers(inputs, diffIm, calexp, template)
        writer = None
        if self.config.doWriteAlerts:
            path = Path(self.config.alertWriteLocation) / alert_file_name(visit, detector)
            writer = AlertFileWriter(path, self.alertSchema, codec=self.config.avroCodec)
        bodies: list[bytes] = []
        chunk = 1024  # bounds the memory of the gathered cutouts
        with self.timer("package"):
            try:
                for start in range(0, n, chunk):
                    stop = min(start + chunk, n)
                    cuts = self._cut_chunk(start, stop, inputs, makers)
                    for k in range(start, stop):
                        body = self._alert_bytes(k, inputs, cuts, k - start)
                        if k == 0 or self.config.doValidateEveryAlert:
                            self._check(body)
                        if writer is not None:
                            writer.append(body)
                        if self.config.doProduceAlerts:
                            bodies.append(body)
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            alert_file = writer.close() if writer is not None else None
        n_delivered, failed_file = 0, None
        if self.config.doProduceAlerts:
            with self.timer("produce"):
                keys = inputs.source_ids.tolist()
                n_delivered, failed_file = self._produce(bodies, keys, visit, detector)
        missing = {label: n - counts["made"] for label, counts in self._made.items()}
        reasons = {label: dict(m.reasons) for label, m in makers.items() if m is not None}
        reasons.update(self._none_reasons)
        self.metadata.update(nAlerts=n, cutoutsMissing=missing, cutoutReasons=reasons)
        if any(missing.values()):
            self.log.info(
                "visit %d detector %d: cutouts missing %s (%s)", visit, detector, missing, reasons
            )
        return PackageAlertsResult(
            alertFile=alert_file,
            nAlerts=n,
            cutoutsMissing=missing,
            nDelivered=n_delivered,
            failedAlertFile=failed_file,
        )

    # -- helpers ---------------------------------------------------------------
    def _defaults(self, record: str) -> dict[str, Any]:
        """Values for required schema fields an input may lack."""
        spec = self.alertSchema.records[record]
        out: dict[str, Any] = {}
        now = Time.now().tai.mjd
        for field in spec.fields:
            if field.nullable:
                continue
            if field.type == "int" and (
                field.name.endswith("Ndata") or field.name == "nDiaSources"
            ):
                out[field.name] = 0
            elif field.name == "timeProcessedMjdTai":
                out[field.name] = now
        return out

    def _maker(self, exposure: Any, label: str, photo_calib: Any = None) -> CutoutMaker:
        return CutoutMaker(
            exposure, label, tuple(self.config.cutoutBadMaskPlanes), photo_calib=photo_calib
        )

    def _cutout_makers(self, inputs: Any, diffIm: Any, calexp: Any, template: Any) -> dict:
        makers: dict[str, Any] = {}
        self._made = {}
        self._none_reasons: dict[str, dict[str, int]] = {}
        self._cut_geometry = {}
        for label, exposure in (
            ("difference", diffIm),
            ("science", calexp),
            ("template", template),
        ):
            self._made[label] = Counter()
            if exposure is None or not self.config.doPackageCutouts or len(inputs.sources) == 0:
                makers[label] = None
                if len(inputs.sources):
                    why = "not requested" if exposure is not None else f"no {label} exposure"
                    self._none_reasons[label] = {why: len(inputs.sources)}
                continue
            maker = self._maker(exposure, label)
            same = next((g for g in self._cut_geometry.values() if g[4] is exposure.wcs), None)
            if same is not None:  # same WCS object: same positions and local WCS
                x, y, cd, group = same[:4]
            else:
                x, y = maker.positions(inputs.ra, inputs.dec)
                cd = maker.local_wcs(x, y, inputs.ra, inputs.dec)
                group = len(self._cut_geometry)
            makers[label] = maker
            self._cut_geometry[label] = (x, y, cd, group, exposure.wcs)
        self._sizes = cutout_sizes(
            inputs.bbox_size, self.config.minCutoutSize, self.config.maxCutoutSize
        )
        return makers

    def _cut_chunk(self, start: int, stop: int, inputs: Any, makers: dict) -> dict[str, list]:
        """Cutouts of sources ``start .. stop - 1`` for every exposure (label → list)."""
        cuts: dict[str, list] = {}
        sl = slice(start, stop)
        for label, _ in _CUTOUT_FIELDS:
            maker = makers[label]
            if maker is None:
                cuts[label] = [None] * (stop - start)
                continue
            x, y, cd, _, _ = self._cut_geometry[label]
            cuts[label] = maker.cut_many(
                x[sl],
                y[sl],
                self._sizes[sl],
                inputs.ra[sl],
                inputs.dec[sl],
                cd[sl],
                inputs.source_ids[sl],
            )
            self._made[label]["made"] += sum(c is not None for c in cuts[label])
        return cuts

    def _alert_bytes(self, k: int, inputs: Any, cuts: dict[str, list], j: int) -> bytes:
        """Encode alert ``k`` from the pre-encoded records and its cutouts (``cuts[*][j]``)."""
        sid = int(inputs.source_ids[k])
        oid = int(inputs.object_ids[k])
        cutouts: dict[str, bytes | None] = {}
        shared: dict[int, Any] = {}  # exposures on one pixel grid share the local WCS header
        for label, field in _CUTOUT_FIELDS:
            cut = cuts[label][j]
            if cut is None:
                cutouts[field] = None
                continue
            group = self._cut_geometry[label][3]
            if group in shared and shared[group].crpix == cut.wcs.crpix:
                cut.wcs = shared[group]
            shared[group] = cut.wcs
            cutouts[field] = encode_bytes(cut.to_bytes())
        obj = inputs.objects.get(oid) if oid else None
        parts: dict[str, bytes | None] = {
            "diaSourceId": zigzag(sid),
            "diaSource": inputs.sources.row(k),
            "diaObject": obj,
            "ssSource": inputs.ss_sources.get(sid),
            **cutouts,
        }
        if obj is not None:
            parts["prvDiaSources"] = encode_array(*inputs.src_history.get(oid, (0, b"")))
            parts["prvDiaForcedSources"] = encode_array(*inputs.forced_history.get(oid, (0, b"")))
        return encode_record(self.alertSchema.records["alert"], parts)

    def _check(self, body: bytes) -> None:
        """Decode an encoded alert with fastavro and check it re-encodes identically."""
        try:
            alert = self.alertSchema.deserialize(body)
            validate_alert(alert, self.alertSchema)
            same = self.alertSchema.serialize(alert) == body
        except (ValueError, TypeError, EOFError, KeyError) as exc:
            raise AlertValidationError(f"an encoded alert does not decode: {exc}") from exc
        if not same:
            raise AlertValidationError(
                f"alert {alert.get('diaSourceId')}: encoding differs from fastavro's"
            )

    def _report_unused(self, unused: dict[str, list[str]]) -> None:
        """Say once which input columns no alert field carries."""
        reported = self.metadata.setdefault("unusedColumns", {})
        for record, columns in unused.items():
            new = [c for c in columns if c not in reported.get(record, [])]
            if new:
                self.log.info("input columns not in the alert's %s record: %s", record, new)
                reported[record] = sorted(set(reported.get(record, [])) | set(new))

    def _produce(
        self, bodies: list[bytes], keys: list[int], visit: int, detector: int
    ) -> tuple[int, Path | None]:
        from tasks.alerts.kafka import AlertProducer

        if self._producer is None:
            self._producer = AlertProducer.from_environment(
                self.config.schemaId or self.alertSchema.schema_id,
                batch_size=self.config.kafkaBatchSize,
                flush_timeout=self.config.kafkaFlushTimeout,
            )
        result = self._producer.produce(bodies, keys)
        failed_file = None
        if result.failed:
            self.log.warning(
                "%d of %d alerts not delivered to Kafka: %s",
                len(result.failed),
                len(bodies),
                result.errors[0],
            )
            if self.config.doWriteFailedAlerts:
                path = (
                    Path(self.config.alertWriteLocation)
                    / "failed"
                    / alert_file_name(visit, detector)
                )
                with AlertFileWriter(path, self.alertSchema, codec=self.config.avroCodec) as writer:
                    for i in result.failed:
                        writer.append(bodies[i])
                failed_file = path
        return result.delivered, failed_file

    @staticmethod
    def _visit_detector(
        cat: pd.DataFrame, diffIm: Any, visit: int | None, detector: int | None
    ) -> tuple[int, int]:
        frame = _frame(cat)
        if visit is None and "visit" in frame.columns and len(frame):
            visit = int(frame["visit"].iloc[0])
        if detector is None and "detector" in frame.columns and len(frame):
            detector = int(frame["detector"].iloc[0])
        info = getattr(diffIm, "visit_info", None)
        if visit is None and info is not None:
            visit = int(info.visit_id)
        if detector is None and getattr(diffIm, "detector", None) is not None:
            det = diffIm.detector
            detector = int(getattr(det, "id", det))
        if visit is None or detector is None:
            raise TaskError("PackageAlertsTask needs the visit and detector (give them explicitly)")
        return visit, detector


def _frame(value: Any) -> pd.DataFrame:
    if isinstance(value, pd.Series):
        return value.to_frame().T
    return value


def _radec(sky: SkyCoord | tuple[float, float]) -> tuple[float, float]:
    if isinstance(sky, SkyCoord):
        icrs = sky.icrs
        return float(icrs.ra.deg), float(icrs.dec.deg)
    return float(sky[0]), float(sky[1])
