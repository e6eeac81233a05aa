"""The exception hierarchy of the APDB engine.

Every error raised on purpose by `apdb` derives from `ApdbError`.  Errors about
bad input derive from `ApdbInputError` and are raised before anything is
written, so the database is left exactly as it was.  Driver errors are wrapped
in `ApdbDatabaseError` with the original exception chained (``raise ... from``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "AlreadyStoredError",
    "ApdbConfigError",
    "ApdbConcurrencyError",
    "ApdbConfigMismatchError",
    "ApdbDatabaseError",
    "ApdbError",
    "ApdbInputError",
    "ApdbNotFoundError",
    "ApdbPermissionError",
    "ApdbSchemaVersionError",
    "ColumnTypeError",
    "DuplicateIdError",
    "FrozenMetadataError",
    "InvalidCoordinatesError",
    "InvalidIdError",
    "InvalidRegionError",
    "InvalidTimeError",
    "MetadataExistsError",
    "MissingColumnsError",
    "NullValueError",
    "PostgresUnavailableError",
    "ReplicationDisabledError",
    "SuspiciousStringError",
    "UnknownBandError",
    "UnknownIdError",
    "UnknownObjectError",
]


def _preview(values: Iterable[object], limit: int = 10) -> str:
    """Format at most ``limit`` values for an error message."""
    values = list(values)
    text = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    if len(values) > limit:
        text += f", ... ({len(values)} in all)"
    return text


class ApdbError(Exception):
    """Base class of every error raised by the APDB engine."""


class ApdbConfigError(ApdbError):
    """The configuration is invalid."""


class ReplicationDisabledError(ApdbConfigError):
    """A replica-chunk method was called on an APDB created without replication."""

    def __init__(self, what: str):
        super().__init__(
            f"{what}: this APDB was created without replication "
            f"(config:replication.enabled is false); create one with "
            f"replication.enabled: true to record replica chunks"
        )


class ApdbConfigMismatchError(ApdbConfigError):
    """The configuration disagrees with the settings frozen in the database.

    Parameters
    ----------
    differences : `dict` [`str`, `tuple`]
        ``{setting: (value in the config, value in the database)}``.
    """

    def __init__(self, differences: dict[str, tuple[object, object]]):
        self.differences = dict(differences)
        text = "; ".join(f"{k}: config={a!r}, database={b!r}" for k, a, b in self._items())
        super().__init__(f"configuration does not match the database: {text}")

    def _items(self) -> list[tuple[str, object, object]]:
        return [(k, v[0], v[1]) for k, v in sorted(self.differences.items())]


class ApdbNotFoundError(ApdbError):
    """The database does not exist or holds no APDB schema."""


class ApdbSchemaVersionError(ApdbError):
    """The database schema revision is not the one this code needs.

    Parameters
    ----------
    current : `str` or `None`
        Revision found in the database.
    expected : `str`
        Revision this code needs (alembic head).
    """

    def __init__(self, current: str | None, expected: str):
        self.current = current
        self.expected = expected
        super().__init__(
            f"database schema revision is {current!r} but this code needs {expected!r}; "
            f"run `apdb upgrade` (or `apdb downgrade`) first"
        )


class ApdbDatabaseError(ApdbError):
    """A database driver error, wrapped (the original is ``__cause__``)."""


class ApdbConcurrencyError(ApdbDatabaseError):
    """A write kept colliding with concurrent writers and was given up.

    Raised after a bounded number of whole-transaction retries (deadlock,
    serialization failure, lock timeout, SQLite busy, or a unique violation
    caused by another writer).  Nothing of the failed call was written.

    Parameters
    ----------
    what : `str`
        The operation (e.g. ``"store of visit 7 detector 3"``).
    object_ids : sequence of `int`
        DiaObject ids the operation locked (may be empty).
    attempts : `int`
        Number of attempts made.
    reason : `str`
        The last database error, one line.
    """

    def __init__(self, what: str, object_ids: Sequence[int], attempts: int, reason: str):
        self.what = what
        self.object_ids = list(object_ids)
        self.attempts = attempts
        self.reason = reason
        objects = f" on DiaObject ids {_preview(self.object_ids)}" if self.object_ids else ""
        super().__init__(
            f"{what}: gave up after {attempts} attempt(s) because of concurrent writers"
            f"{objects}: {reason}"
        )


class ApdbPermissionError(ApdbError):
    """The database refused an operation for lack of privilege.

    Raised, for example, when a member of the read-only role ``apdb_reader``
    calls a write method, or when an SQLite file is read-only.  The driver's
    error is ``__cause__``.

    Parameters
    ----------
    operation : `str`
        The refused operation (e.g. ``"store"``).
    detail : `str`
        The database's message.
    """

    def __init__(self, operation: str, detail: str):
        self.operation = operation
        self.detail = detail
        super().__init__(
            f"{operation}: permission denied ({detail}); this connection may only read"
        )


class InvalidRegionError(ApdbError):
    """A sky region is malformed (bad radius, degenerate polygon, ...)."""


class PostgresUnavailableError(ApdbError):
    """No PostgreSQL server binaries were found, or the server failed to start."""


class ApdbInputError(ApdbError):
    """Bad input to a repository call; nothing was written.

    Parameters
    ----------
    table : `str`
        Table whose input is bad.
    message : `str`
        What is wrong.
    """

    def __init__(self, table: str, message: str):
        self.table = table
        super().__init__(f"{table}: {message}")


class MissingColumnsError(ApdbInputError):
    """Required columns are missing from an input DataFrame."""

    def __init__(self, table: str, columns: Sequence[str]):
        self.columns = list(columns)
        super().__init__(table, f"missing required column(s): {_preview(self.columns, 50)}")


class ColumnTypeError(ApdbInputError):
    """A column cannot be converted to the type the schema gives it."""

    def __init__(self, table: str, column: str, expected: str, got: str):
        self.column = column
        self.expected = expected
        self.got = got
        super().__init__(table, f"column {column!r} has dtype {got}, expected {expected}")


class InvalidCoordinatesError(ApdbInputError):
    """NaN or out-of-range ra/dec (ra in [0, 360), dec in [-90, 90])."""

    def __init__(self, table: str, id_column: str, ids: Sequence[object], reason: str):
        self.id_column = id_column
        self.ids = list(ids)
        super().__init__(table, f"{reason} for {id_column} {_preview(self.ids)}")


class DuplicateIdError(ApdbInputError):
    """The same id appears more than once within one call."""

    def __init__(self, table: str, column: str, ids: Sequence[object]):
        self.column = column
        self.ids = list(ids)
        super().__init__(table, f"duplicate {column} within the input: {_preview(self.ids)}")


class AlreadyStoredError(ApdbInputError):
    """Rows with these ids (or this visit/detector) are already in the database."""

    def __init__(self, table: str, column: str, ids: Sequence[object]):
        self.column = column
        self.ids = list(ids)
        super().__init__(table, f"already stored (re-stored visit?): {column} {_preview(self.ids)}")


class UnknownBandError(ApdbInputError):
    """A band that is not one of the configured bands (``u g r i z y``)."""

    def __init__(self, table: str, bands: Sequence[object], allowed: Sequence[str]):
        self.bands = list(bands)
        self.allowed = list(allowed)
        super().__init__(
            table, f"unknown band(s) {_preview(self.bands)}; allowed: {' '.join(self.allowed)}"
        )


class SuspiciousStringError(ApdbInputError):
    """A string value that looks like SQL (quotes, semicolons, comments)."""

    def __init__(self, table: str, column: str, values: Sequence[object]):
        self.column = column
        self.values = list(values)
        super().__init__(
            table, f"column {column!r} holds SQL-looking string(s): {_preview(self.values)}"
        )


class NullValueError(ApdbInputError):
    """NULL/NaN values in a column that may not be NULL."""

    def __init__(self, table: str, column: str, count: int):
        self.column = column
        self.count = count
        super().__init__(table, f"column {column!r} may not be NULL/NaN ({count} row(s))")


class UnknownIdError(ApdbInputError):
    """Ids that are not in the database (or have no open version); nothing was changed.

    Parameters
    ----------
    table : `str`
        Table searched.
    column : `str`
        Id column (``diaSourceId``, ``diaObjectId``, ...).
    ids : sequence
        The ids not found.
    """

    def __init__(self, table: str, column: str, ids: Sequence[object]):
        self.column = column
        self.ids = list(ids)
        super().__init__(table, f"unknown {column}: {_preview(self.ids)}; nothing was changed")


class MetadataExistsError(ApdbInputError):
    """`ApdbMetadata.set` of an existing key without ``force=True``."""

    def __init__(self, key: str):
        self.key = key
        super().__init__("metadata", f"key {key!r} already exists (pass force=True to replace it)")


class FrozenMetadataError(ApdbInputError):
    """An attempt to change or delete a metadata key written at creation.

    Schema versions (``version:*``), frozen settings (``config:*``) and the
    creation time are what `Apdb.from_config` checks a database against; they
    change only through ``apdb`` migrations, never through `ApdbMetadata`.
    """

    def __init__(self, key: str, action: str):
        self.key = key
        self.action = action
        super().__init__(
            "metadata", f"cannot {action} key {key!r}: it is frozen at the APDB's creation"
        )


class InvalidIdError(ApdbInputError):
    """Negative ids (``diaObjectId``, ``diaSourceId``, ``visit``, ...)."""

    def __init__(self, table: str, column: str, ids: Sequence[object]):
        self.column = column
        self.ids = list(ids)
        super().__init__(table, f"negative {column}: {_preview(self.ids)}")


class UnknownObjectError(ApdbInputError):
    """Sources refer to DiaObjects that are neither stored nor given in the same call."""

    def __init__(self, table: str, ids: Sequence[object]):
        self.ids = list(ids)
        super().__init__(
            table,
            f"diaObjectId not stored and not among this call's DiaObjects: {_preview(self.ids)}",
        )


class InvalidTimeError(ApdbInputError):
    """A time outside what is allowed.

    A ``midpointMjdTai`` too far from the visit time, or a history window that
    is negative or starts after the visit time.
    """
