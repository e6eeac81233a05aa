"""Database exceptions translated into the `apdb.errors` hierarchy.

Drivers raise their own exceptions (``sqlalchemy.exc.*`` wrapping psycopg's
or sqlite3's); callers of the engine only ever see `apdb.errors.ApdbError`
subclasses, with the driver's exception chained as ``__cause__``:

- insufficient privilege (PostgreSQL SQLSTATE 42501), a read-only
  transaction (25006) or a read-only SQLite file → `ApdbPermissionError`;
- an SQLite file that cannot be opened → `ApdbNotFoundError`;
- anything else from the driver (lost connection, server down or shutting
  down, a file that is not a database, ...) → `ApdbDatabaseError`, with a
  message saying what was being done.

`translate_errors` is the context manager; `translate_methods` applies it to
every public method of a class.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import sqlalchemy as sa

from apdb.errors import ApdbDatabaseError, ApdbError, ApdbNotFoundError, ApdbPermissionError

__all__ = ["database_error", "is_database_error", "translate_errors", "translate_methods"]

_DRIVER_ERRORS = (sa.exc.SQLAlchemyError, psycopg.Error, sqlite3.Error)

# PostgreSQL SQLSTATEs.
_PG_PERMISSION = {"42501", "25006"}  # insufficient_privilege, read_only_sql_transaction
_PG_DISCONNECT_CLASS = "08"  # connection_exception
_PG_SHUTDOWN = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now

T = TypeVar("T")


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database driver (and needs translating)."""
    return isinstance(exc, _DRIVER_ERRORS)


def _driver_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the DB-API exception it wraps, and their causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend([getattr(item, "orig", None), item.__cause__])


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(exc: BaseException) -> tuple[str, BaseException]:
    """Classify a driver exception: ``permission``, ``missing``, ``lost`` or ``other``."""
    for item in _driver_chain(exc):
        if isinstance(item, psycopg.Error):
            state = item.sqlstate or ""
            if state in _PG_PERMISSION or isinstance(item, psycopg.errors.InsufficientPrivilege):
                return "permission", item
            if state.startswith(_PG_DISCONNECT_CLASS) or state in _PG_SHUTDOWN:
                return "lost", item
            if isinstance(item, psycopg.OperationalError) and not state:
                # Raised by libpq itself: refused connection, closed socket.
                return "lost", item
        elif isinstance(item, sqlite3.Error):
            name = getattr(item, "sqlite_errorname", "") or ""
            if name.startswith("SQLITE_READONLY") or name.startswith("SQLITE_AUTH"):
                return "permission", item
            if name.startswith("SQLITE_CANTOPEN"):
                return "missing", item
            if name == "SQLITE_NOTADB":
                return "notadb", item
    return "other", exc


def database_error(exc: BaseException, what: str) -> ApdbError:
    """Return the `ApdbError` for a driver exception (the caller chains it).

    Parameters
    ----------
    exc : `BaseException`
        A driver exception (``sqlalchemy.exc``, psycopg or sqlite3).
    what : `str`
        The operation that failed, for the message (e.g. ``"get_dia_objects"``).

    Returns
    -------
    error : `ApdbError`
        `ApdbPermissionError`, `ApdbNotFoundError` or `ApdbDatabaseError`.
    """
    kind, item = _kind(exc)
    detail = _first_line(item)
    if kind == "permission":
        return ApdbPermissionError(what, detail)
    if kind == "missing":
        return ApdbNotFoundError(f"{what}: cannot open the SQLite database file: {detail}")
    if kind == "notadb":
        return ApdbDatabaseError(f"{what}: not an SQLite database: {detail}")
    if kind == "lost":
        return ApdbDatabaseError(
            f"{what}: lost the connection to the database (or the server is down): {detail}"
        )
    return ApdbDatabaseError(f"{what}: database error: {detail}")


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn driver exceptions raised inside the block into `ApdbError` subclasses.

    `ApdbError` passes through unchanged, except an `ApdbDatabaseError`
    (raised by code that wraps every driver error alike) whose cause is a
    privilege error: that becomes `ApdbPermissionError`.  Exceptions that
    are not from the driver (programming errors) are not touched.

    Parameters
    ----------
    what : `str`
        The operation, named in the messages.

    Raises
    ------
    ApdbPermissionError, ApdbNotFoundError, ApdbDatabaseError
    """
    try:
        yield
    except ApdbPermissionError:
        raise
    except ApdbDatabaseError as exc:
        cause = exc.__cause__
        if cause is not None and is_database_error(cause):
            kind, item = _kind(cause)
            if kind == "permission":
                raise ApdbPermissionError(what, _first_line(item)) from cause
        raise
    except ApdbError:
        raise
    except _DRIVER_ERRORS as exc:
        raise database_error(exc, what) from exc


def _wrap(func: Callable[..., T], what: str) -> Callable[..., T]:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with translate_errors(what):
            return func(*args, **kwargs)

    return wrapper


def translate_methods(cls: type[T]) -> type[T]:
    """Class decorator: every public method (and ``__init__``) under `translate_errors`.

    Methods, class methods and static methods defined on ``cls`` itself
    whose names do not start with ``_`` are wrapped, each named by its method
    name in messages (``__init__`` as ``open``); properties are left alone
    (they must not touch the database).
    """
    for name, attr in list(vars(cls).items()):
        if name.startswith("_") and name != "__init__":
            continue
        what = "open" if name == "__init__" else name
        if isinstance(attr, classmethod):
            setattr(cls, name, classmethod(_wrap(attr.__func__, what)))
        elif isinstance(attr, staticmethod):
            setattr(cls, name, staticmethod(_wrap(attr.__func__, what)))
        elif inspect.isfunction(attr):
            setattr(cls, name, _wrap(attr, what))
    return cls
