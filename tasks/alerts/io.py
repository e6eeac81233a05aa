"""Validating, writing and reading alert files.

fastavro silently drops record keys the schema does not know, so every
alert is written with fastavro's *strict* mode: a record whose keys differ
from the schema's fields at any level, or whose values have the wrong
type, raises instead of being trimmed.  `validate_alert` gives the same
verdict for a single alert with the path of the offending field, used to
single out bad alerts when a batch fails.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import ValidationError

from tasks.alerts.encoder import zigzag
from tasks.alerts.schema import AlertSchema, AlertSchemaError, load_alert_schema

__all__ = [
    "AlertFileWriter",
    "AlertValidationError",
    "alert_file_name",
    "read_alert_file",
    "iter_alert_file",
    "validate_alert",
    "write_alert_file",
]


class AlertValidationError(AlertSchemaError):
    """An alert does not follow the alert schema.

    Attributes
    ----------
    dia_source_id : `int` or `None`
        The alert's ``diaSourceId`` when known.
    """

    def __init__(self, message: str, dia_source_id: int | None = None) -> None:
        super().__init__(message)
        self.dia_source_id = dia_source_id


def _extra_keys(datum: Any, schema: Any, path: str) -> list[str]:
    """Return the paths of keys present in ``datum`` but not in its record schema."""
    if isinstance(schema, list):  # union: check against the branch that fits
        if datum is None:
            return []
        for branch in schema:
            if branch == "null":
                continue
            if isinstance(branch, dict) and branch.get("type") in ("record", "array"):
                return _extra_keys(datum, branch, path)
        return []
    if not isinstance(schema, dict):
        return []
    if schema.get("type") == "record" and isinstance(datum, dict):
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        extra = [f"{path}.{k}" if path else k for k in datum if k not in fields]
        for name, ftype in fields.items():
            if name in datum:
                extra += _extra_keys(datum[name], ftype, f"{path}.{name}" if path else name)
        return extra
    if schema.get("type") == "array" and isinstance(datum, list | tuple):
        out: list[str] = []
        for i, item in enumerate(datum):
            out += _extra_keys(item, schema["items"], f"{path}[{i}]")
        return out
    return []


def validate_alert(alert: dict[str, Any], schema: AlertSchema | None = None) -> None:
    """Check one alert against the schema, strictly.

    Parameters
    ----------
    alert : `dict`
        The alert record.
    schema : `AlertSchema`, optional
        Defaults to the latest schema.

    Raises
    ------
    AlertValidationError
        With the path of the first offending field: a key the schema does
        not have (fastavro would drop it), a missing field, or a wrong type.
    """
    schema = schema or load_alert_schema()
    src_id = alert.get("diaSourceId") if isinstance(alert, dict) else None
    extra = _extra_keys(alert, schema.definition, "")
    if extra:
        raise AlertValidationError(
            f"alert {src_id}: field(s) not in alert schema {schema.version} would be dropped: "
            + ", ".join(extra[:10]),
            src_id,
        )
    try:
        fastavro.validation.validate(alert, schema.parsed, raise_errors=True, strict=True)
    except ValidationError as exc:
        raise AlertValidationError(f"alert {src_id}: {exc}", src_id) from exc
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise AlertValidationError(f"alert {src_id}: {exc}", src_id) from exc


def alert_file_name(visit: int, detector: int) -> str:
    """Name of the alert file of one visit/detector (as in `tasks.data.layout`)."""
    return f"visit_{int(visit):07d}_det_{int(detector):03d}.avro"


def write_alert_file(
    path: str | os.PathLike[str],
    alerts: list[dict[str, Any]],
    schema: AlertSchema | None = None,
    codec: str = "null",
) -> Path:
    """Write alerts to one Avro container file, strictly validated.

    The file is written to a temporary name and renamed, so a reader never
    sees a half-written file.

    Parameters
    ----------
    path : path-like
        Destination.
    alerts : `list` [`dict`]
        Alert records.
    schema : `AlertSchema`, optional
        Defaults to the latest schema.
    codec : `str`, optional
        Avro block codec (``null`` or ``deflate``).

    Returns
    -------
    path : `pathlib.Path`

    Raises
    ------
    AlertValidationError
        If any alert does not follow the schema (nothing is written).
    """
    schema = schema or load_alert_schema()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    try:
        fastavro.writer(buf, schema.parsed, alerts, codec=codec, strict=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        for alert in alerts:  # find the culprit for a precise message
            validate_alert(alert, schema)
        raise AlertValidationError(f"alerts do not follow schema {schema.version}: {exc}") from exc
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


class AlertFileWriter:
    """Stream already-serialised alerts into an Avro container file.

    Each alert is serialised (and thereby strictly validated) once with
    `AlertSchema.serialize`; the same bytes feed Kafka and this file.  The
    header (schema, codec, sync marker) is written by fastavro; data blocks
    follow the Avro container specification: object count, byte size, the
    concatenated datums (raw-deflated for ``deflate``), the sync marker.
    The file appears under its final name only when `close` succeeds.

    Parameters
    ----------
    path : path-like
        Destination file.
    schema : `AlertSchema`
        Schema the alerts were serialised with.
    codec : `str`, optional
        ``null`` or ``deflate``.
    block_size : `int`, optional
        Alerts per data block.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: AlertSchema,
        codec: str = "null",
        block_size: int = 64,
    ) -> None:
        if codec not in ("null", "deflate"):
            raise AlertSchemaError(f"unsupported Avro codec {codec!r} (null or deflate)")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._sync = os.urandom(16)
        self._codec = codec
        self._block: list[bytes] = []
        self._block_size = int(block_size)
        self.count = 0
        fastavro.writer(self._fh, schema.parsed, [], codec=codec, sync_marker=self._sync)

    def append(self, body: bytes) -> None:
        """Add one serialised alert."""
        self._block.append(body)
        self.count += 1
        if len(self._block) >= self._block_size:
            self._flush_block()

    def _flush_block(self) -> None:
        if not self._block:
            return
        data = b"".join(self._block)
        if self._codec == "deflate":
            comp = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = comp.compress(data) + comp.flush()
        self._fh.write(zigzag(len(self._block)) + zigzag(len(data)))
        self._fh.write(data)
        self._fh.write(self._sync)
        self._block = []

    def close(self) -> Path:
        """Write the last block and move the file to its final name."""
        self._flush_block()
        self._fh.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AlertFileWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_alert_file(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Iterate over the alerts of an Avro container file (writer's schema)."""
    with open(path, "rb") as fh:
        try:
            yield from fastavro.reader(fh)
        except (ValueError, EOFError, fastavro.read.SchemaResolutionError) as exc:
            raise AlertSchemaError(f"{path} is not a readable Avro alert file: {exc}") from exc


def read_alert_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read all alerts of an Avro container file."""
    return list(iter_alert_file(path))
