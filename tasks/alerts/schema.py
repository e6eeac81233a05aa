"""Rubin's alert schema, loaded from the ``lsst-alert-packet`` package.

The schema is never copied into this project: it is read at run time from
the package's own files (the latest version the installed package ships,
or a version named in the configuration), so upgrading the package is how
the alert format follows Rubin's.

`AlertSchema` holds the parsed schema and, for each record type of the
alert (``diaSource``, ``diaObject``, ``diaForcedSource``, ``ssSource``,
...), the list of its fields with their Avro base type and nullability,
which is what `tasks.alerts.records` needs to turn DataFrames into records.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.repository.base import SchemaRepositoryError

from tasks.core.base import TaskError

__all__ = [
    "AlertSchema",
    "AlertSchemaError",
    "FieldSpec",
    "RecordSpec",
    "latest_schema_version",
    "load_alert_schema",
]


class AlertSchemaError(TaskError):
    """The alert schema cannot be loaded or a record does not follow it."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of an Avro record.

    Attributes
    ----------
    name : `str`
        Field name (a Rubin column name).
    type : `str`
        Avro base type: ``long``, ``int``, ``float``, ``double``, ``boolean``,
        ``string``, ``bytes``, or ``record``/``array``/``other`` for complex types.
    nullable : `bool`
        Whether the field is a union with ``null``.
    logical_type : `str` or `None`
        Avro logical type (e.g. ``timestamp-micros``), if any.
    null_index, value_index : `int`
        Union branch indices of ``null`` and of the value (0 when not a union).
    """

    name: str
    type: str
    nullable: bool
    logical_type: str | None = None
    null_index: int = 0
    value_index: int = 0


@dataclass(frozen=True)
class RecordSpec:
    """The fields of one named record type of the alert schema."""

    name: str
    fields: tuple[FieldSpec, ...]

    @property
    def names(self) -> list[str]:
        """Field names in schema order."""
        return [f.name for f in self.fields]

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)


@dataclass(frozen=True)
class AlertSchema:
    """A parsed alert schema of one version.

    Attributes
    ----------
    version : `str`
        ``"MAJOR.MINOR"``.
    schema_id : `int`
        The id ``lsst-alert-packet`` assigns to the version (e.g. 1101 for
        11.1); the default Confluent-registry id in Kafka headers.
    definition : `dict`
        The schema as loaded by ``lsst.alert.packet`` (named types inlined).
    parsed : `dict`
        The same, parsed by `fastavro.parse_schema` (what readers/writers use).
    records : `dict` [`str`, `RecordSpec`]
        Record types by short name: ``alert``, ``diaSource``, ``diaObject``,
        ``diaForcedSource``, ``ssSource``, ``mpc_orbits``.
    """

    version: str
    schema_id: int
    definition: dict[str, Any]
    parsed: dict[str, Any]
    records: dict[str, RecordSpec]

    def serialize(self, record: dict[str, Any]) -> bytes:
        """Serialise one alert without a container (strict: fields must match)."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, record, strict=True)
        return buf.getvalue()

    def deserialize(self, payload: bytes) -> dict[str, Any]:
        """Decode one alert serialised by `serialize`."""
        return fastavro.schemaless_reader(io.BytesIO(payload), self.parsed)


def _union_indices(avro_type: Any) -> tuple[int, int]:
    """Return the branch indices ``(null, value)`` of a ``[null, T]`` union."""
    if not isinstance(avro_type, list):
        return 0, 0
    null = avro_type.index("null") if "null" in avro_type else 0
    value = next((i for i, t in enumerate(avro_type) if t != "null"), 0)
    return null, value


def _base_type(avro_type: Any) -> tuple[str, bool, str | None]:
    """Return ``(base type, nullable, logical type)`` of a field's Avro type."""
    nullable = False
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        nullable = len(branches) < len(avro_type)
        if len(branches) != 1:
            return "other", nullable, None
        avro_type = branches[0]
    logical = None
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        kind = avro_type.get("type")
        if kind in ("record", "array", "map", "enum", "fixed"):
            return kind, nullable, logical
        avro_type = kind
    if isinstance(avro_type, str) and avro_type in (
        "long",
        "int",
        "float",
        "double",
        "boolean",
        "string",
        "bytes",
    ):
        return avro_type, nullable, logical
    return "record", nullable, logical  # a named type


def _collect_records(definition: Any, out: dict[str, RecordSpec]) -> None:
    """Walk a (fully inlined) schema and collect every named record type."""
    if isinstance(definition, list):
        for item in definition:
            _collect_records(item, out)
        return
    if not isinstance(definition, dict):
        return
    if definition.get("type") == "record":
        short = definition["name"].split(".")[-1]
        fields = []
        for field in definition["fields"]:
            base, nullable, logical = _base_type(field["type"])
            null_index, value_index = _union_indices(field["type"])
            fields.append(
                FieldSpec(field["name"], base, nullable, logical, null_index, value_index)
            )
            _collect_records(field["type"], out)
        out.setdefault(short, RecordSpec(short, tuple(fields)))
    elif definition.get("type") == "array":
        _collect_records(definition.get("items"), out)


def latest_schema_version() -> str:
    """Return the latest alert schema version shipped by ``lsst-alert-packet``."""
    from lsst.alert.packet import get_latest_schema_version

    major, minor = get_latest_schema_version()
    return f"{major}.{minor}"


@functools.lru_cache(maxsize=8)
def load_alert_schema(version: str | None = None) -> AlertSchema:
    """Load an alert schema from the installed ``lsst-alert-packet``.

    Parameters
    ----------
    version : `str`, optional
        ``"MAJOR.MINOR"``; the latest version the package ships by default.

    Returns
    -------
    schema : `AlertSchema`

    Raises
    ------
    AlertSchemaError
        If the package is missing or does not ship that version.
    """
    try:
        from lsst.alert.packet import Schema, get_schema_path
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise AlertSchemaError(
            "the alert schema comes from lsst-alert-packet: pip install lsst-alert-packet"
        ) from exc
    if version is None:
        version = latest_schema_version()
    try:
        major, minor = (int(part) for part in version.split("."))
    except ValueError:
        raise AlertSchemaError(f"alert schema version {version!r} is not MAJOR.MINOR") from None
    path = f"{get_schema_path(major, minor)}/lsst.v{major}_{minor}.alert.avsc"
    if not os.path.isfile(path):
        raise AlertSchemaError(f"lsst-alert-packet has no alert schema version {version} ({path})")
    try:
        schema = Schema.from_file(path)
    except (OSError, SchemaRepositoryError) as exc:
        raise AlertSchemaError(
            f"lsst-alert-packet has no alert schema version {version} ({path})"
        ) from exc
    definition = schema.definition
    records: dict[str, RecordSpec] = {}
    _collect_records(definition, records)
    parsed = fastavro.parse_schema(definition)
    return AlertSchema(
        version=version,
        schema_id=int(schema.get_schema_id()),
        definition=definition,
        parsed=parsed,
        records=records,
    )
