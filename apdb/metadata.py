"""`ApdbMetadata`: the key/value ``metadata`` table of an APDB, as an object.

`Apdb.metadata` returns one.  Keys and values are non-empty strings.  Keys
written when the database was created are frozen: schema versions
(``version:*``), settings that shape the schema (``config:*``) and the
creation time (``created``) are what `Apdb.from_config` checks a database
against, so `ApdbMetadata.set` and `ApdbMetadata.delete` refuse them with
`apdb.errors.FrozenMetadataError` (they change only through migrations).
Other keys are free for operators and daytime jobs (deduplication keeps its
state under ``status:deduplication.json``, as Rubin's APDB does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from apdb.errors import ApdbInputError

__all__ = ["FROZEN_KEYS", "FROZEN_PREFIXES", "ApdbMetadata", "check_key", "is_frozen"]

FROZEN_PREFIXES: tuple[str, ...] = ("version:", "config:")
"""Key prefixes reserved for values written at creation."""

FROZEN_KEYS: frozenset[str] = frozenset({"created"})
"""Single keys written at creation."""


def is_frozen(key: str) -> bool:
    """Whether ``key`` belongs to the values frozen at creation."""
    return key in FROZEN_KEYS or key.startswith(FROZEN_PREFIXES)


def check_key(key: object, value: object = "", *, check_value: bool = False) -> str:
    """Return ``key`` after checking it (and ``value``) are non-empty strings.

    Raises
    ------
    ApdbInputError
        Not a string, or empty.
    """
    if not isinstance(key, str) or not key:
        raise ApdbInputError("metadata", f"keys are non-empty strings, got {key!r}")
    if check_value and (not isinstance(value, str) or not value):
        raise ApdbInputError("metadata", f"values are non-empty strings, got {value!r} for {key!r}")
    return key


class ApdbMetadata(ABC):
    """Access to the APDB's ``metadata`` table (Rubin's ``ApdbMetadata``)."""

    @abstractmethod
    def get(self, key: str, default: str | None = None) -> str | None:
        """Return the value of ``key``.

        Parameters
        ----------
        key : `str`
            Non-empty key.
        default : `str`, optional
            Returned when the key does not exist.

        Returns
        -------
        value : `str` or `None`
            The stored value, or ``default``.
        """

    @abstractmethod
    def set(self, key: str, value: str, *, force: bool = False) -> None:
        """Store ``value`` under ``key``.

        Parameters
        ----------
        key : `str`
            Non-empty key.
        value : `str`
            Non-empty value (some databases cannot tell an empty string from
            NULL).
        force : `bool`, optional
            Replace the value of an existing key instead of raising.

        Raises
        ------
        MetadataExistsError
            ``key`` exists and not ``force``; nothing is changed.
        FrozenMetadataError
            ``key`` is frozen at creation (``version:*``, ``config:*``,
            ``created``), whatever ``force``.
        ApdbInputError
            Empty or non-string key or value.
        """

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key``.

        Returns
        -------
        existed : `bool`
            Whether the key existed.

        Raises
        ------
        FrozenMetadataError
            ``key`` is frozen at creation.
        """

    @abstractmethod
    def items(self) -> Iterator[tuple[str, str]]:
        """Iterate over ``(key, value)`` pairs, in key order."""

    @abstractmethod
    def empty(self) -> bool:
        """Whether the table holds no key (also `True` when it is missing)."""
