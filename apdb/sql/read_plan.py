"""Compiled reads: one table's select list and column decoding, built once.

`read_frame` runs the same wide ``SELECT`` (every column of a table) with a
different ``WHERE`` on every call.  Building and compiling that select list
with SQLAlchemy costs more client CPU than a detector-sized read itself, so a
`ReadPlan` compiles it once per table and dialect (cached with the
`sqlalchemy.Table`, i.e. once per `ApdbSql`) and only the ``WHERE`` clause is
compiled per call.

PostgreSQL: the rows come as a binary COPY of fixed-width fields
(`apdb.sql.pgcopy.decode_rows`).  NULLs cannot be sent in a fixed layout, so
nullable numbers are coalesced (floats to NaN, integers to 0) and the NULL
flags of non-float columns, with the values of boolean columns, are packed as
bits into a few ``bigint`` words: one field per 62 flags instead of one field
per flag and per boolean (the server's COPY cost is per field).

SQLite: the statement runs on the raw `sqlite3` cursor and the rows become
columns through one 2-d object array and numpy casts, with the same dtypes and
NULL masks as the PostgreSQL path.

History reads (DiaSource, DiaForcedSource by object id and time window) run on
PostgreSQL with ``enable_indexscan`` off for that one statement
(`HISTORY_SETTINGS`): the sources of a set of objects are scattered over the
table, and a bitmap heap scan reads each heap page once in physical order.
Beyond about a million rows the planner otherwise switches to a plain index
scan (the ``diaObjectId`` correlation statistic rises towards 1 because ids
grow with time) that touches about twice the buffers.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import sqlalchemy as sa

from apdb import schema
from apdb.schema import ColumnInfo
from apdb.sql.pgcopy import PG_TYPES, ReadField, decode_rows

__all__ = ["HISTORY_SETTINGS", "ReadPlan", "planner_settings", "read_plan"]

# Planner settings of the history reads on PostgreSQL (see the module docstring).
HISTORY_SETTINGS: dict[str, str] = {"enable_indexscan": "off"}
_HISTORY_TABLES = ("DiaSource", "DiaForcedSource")

# Strings are sent as fixed-width bytes: UTF-8 needs at most 4 bytes a character.
_UTF8_MAX = 4
_ASCII = np.array([chr(i) for i in range(128)], dtype=object)
# Bits per mask word (a bigint; the sign bit is left alone).
_WORD_BITS = 62

Columns = dict[str, tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class _Bit:
    """A flag packed into mask word ``word`` at bit ``bit``."""

    word: int
    bit: int


class ReadPlan:
    """The compiled ``SELECT <every column> FROM table`` of one dialect.

    Parameters
    ----------
    table : `sqlalchemy.Table`
        Table to read.
    dialect : `sqlalchemy.engine.Dialect`
        Dialect of the connections it is used with.
    """

    def __init__(self, table: sa.Table, dialect: sa.Dialect):
        self.table = table
        self.infos: list[ColumnInfo] = schema.table_columns(table.name)
        self.postgres = dialect.name == "postgresql"
        self.settings = HISTORY_SETTINGS if table.name in _HISTORY_TABLES else {}
        self._value_bits: dict[str, _Bit] = {}
        self._null_bits: dict[str, _Bit] = {}
        self.fields: list[ReadField] = []
        exprs = self._postgres_exprs() if self.postgres else self._plain_exprs()
        stmt = sa.select(*exprs).select_from(table)
        # Only constants of this module are rendered inline (no input values).
        self.head: str = _inline(stmt, dialect)
        # PostgreSQL: the settings go in the COPY's own query (`copy_query`).
        self._set, self._restore = _settings_sql(self.settings, dialect)

    # -- statement -------------------------------------------------------------------
    def _plain_exprs(self) -> list[sa.ColumnElement]:
        return [self.table.c[c.name] for c in self.infos]

    def _postgres_exprs(self) -> list[sa.ColumnElement]:
        exprs: list[sa.ColumnElement] = []
        flags: list[sa.ColumnElement] = []  # one CASE per packed bit, in bit order

        def pack(cond: sa.ColumnElement[bool]) -> _Bit:
            k = len(flags)
            one = sa.literal(1 << (k % _WORD_BITS), sa.BigInteger)
            zero = sa.literal(0, sa.BigInteger)
            # The cast: inline small constants would be read as integer, not bigint.
            flags.append(sa.cast(sa.case((cond, one), else_=zero), sa.BigInteger))
            return _Bit(k // _WORD_BITS, k % _WORD_BITS)

        for c in self.infos:
            col = self.table.c[c.name]
            if c.datatype in ("double", "float"):
                if c.nullable:
                    nan = sa.literal_column("'NaN'", type_=col.type)
                    exprs.append(sa.func.coalesce(col, sa.cast(nan, col.type)))
                else:
                    exprs.append(col)
                self.fields.append(ReadField(c.name, PG_TYPES[c.datatype][0]))
            elif c.datatype == "char" and c.length == 1:
                # One ASCII character (bands): its code as a smallint, 0 for NULL.
                exprs.append(sa.cast(sa.func.coalesce(sa.func.ascii(col), 0), sa.SmallInteger))
                self.fields.append(ReadField(c.name, ">i2"))
            elif c.datatype in ("char", "string", "text"):
                width = _UTF8_MAX * (c.length or 256)
                raw = sa.func.convert_to(sa.func.coalesce(sa.cast(col, sa.Text), ""), "UTF8")
                hexed = sa.func.rpad(sa.func.encode(raw, "hex"), 2 * width, "0")
                exprs.append(sa.func.decode(hexed, "hex"))
                self.fields.append(ReadField(c.name, f"S{width}"))
                if c.nullable:
                    self._null_bits[c.name] = pack(col.is_(None))
            elif c.datatype == "boolean":
                # No field of its own: its value (and NULL flag) are mask bits.
                self._value_bits[c.name] = pack(col.is_(True))
                if c.nullable:
                    self._null_bits[c.name] = pack(col.is_(None))
            else:
                exprs.append(sa.func.coalesce(col, 0) if c.nullable else col)
                self.fields.append(ReadField(c.name, PG_TYPES[c.datatype][0]))
                if c.nullable:
                    self._null_bits[c.name] = pack(col.is_(None))
        for w in range(0, len(flags), _WORD_BITS):
            exprs.append(functools.reduce(operator.add, flags[w : w + _WORD_BITS]))
            self.fields.append(ReadField(f"__mask{w // _WORD_BITS}", ">i8"))
        return exprs

    def sql(self, conn: sa.Connection, where: sa.ColumnElement[bool] | None) -> tuple[str, dict]:
        """Return the SELECT text and its parameters (DB-API style of ``conn``'s driver)."""
        if where is None:
            return self.head, {}
        compiled = where.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        if compiled.positiontup is not None:
            params = [params[k] for k in compiled.positiontup]
        return f"{self.head} WHERE {compiled.string}", params

    def copy_query(self, conn: sa.Connection, where: sa.ColumnElement[bool] | None) -> str:
        """``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` with the values bound (PostgreSQL)."""
        text, params = self.sql(conn, where)
        # COPY takes no server-side parameters: psycopg binds them client-side.
        select = psycopg.ClientCursor(conn.connection.driver_connection).mogrify(text, params)
        return f"COPY ({select}) TO STDOUT (FORMAT BINARY)"

    def settings_query(self, copy: str) -> str:
        """``copy`` preceded by the plan's settings and followed by their restoration.

        One simple-protocol query (one round trip): the previous values are
        saved in ``apdb.saved_<name>`` placeholders, local to the transaction,
        and restored after the COPY, so the rest of a caller's transaction
        plans as before (after an error the rollback undoes everything).
        """
        if not self._set:
            return copy
        return f"{self._set}; {copy}; {self._restore}"

    # -- decoding --------------------------------------------------------------------
    def decode_copy(self, data: bytes) -> Columns:
        """Columns of a binary COPY stream of `copy_query`."""
        decoded = decode_rows(data, self.fields)
        words = [decoded[f.name] for f in self.fields if f.name.startswith("__mask")]

        def bit(b: _Bit) -> np.ndarray:
            return ((words[b.word] >> b.bit) & 1).astype(bool)

        out: Columns = {}
        for c in self.infos:
            nulls = bit(self._null_bits[c.name]) if c.name in self._null_bits else None
            boolean = c.datatype == "boolean"
            vals = bit(self._value_bits[c.name]) if boolean else decoded[c.name]
            if c.datatype in ("double", "float"):
                nulls = np.isnan(vals)
            elif c.datatype == "char" and c.length == 1:
                nulls = vals == 0
                vals = _ASCII[np.clip(vals, 0, 127)]
            elif c.datatype in ("char", "string", "text"):
                vals = np.array([b.decode("utf-8") for b in vals], dtype=object)
            out[c.name] = (vals, nulls if nulls is not None and nulls.any() else None)
        return out

    def decode_rows(self, rows: list[tuple]) -> Columns:
        """Columns of DB-API rows of `sql` (SQLite)."""
        if not rows:
            return {c.name: (np.zeros(0, dtype=c.numpy_dtype), None) for c in self.infos}
        grid = np.array(rows, dtype=object)
        if grid.ndim != 2:  # a column of sequences would nest; never for our types
            grid = np.empty((len(rows), len(self.infos)), dtype=object)
            grid[:] = rows
        out: Columns = {}
        for j, c in enumerate(self.infos):
            col = grid[:, j]
            kind = c.numpy_dtype.kind
            if kind == "f":
                vals = col.astype(np.float64)  # None becomes NaN (SQLite stores NaN as NULL)
                nulls = np.isnan(vals)
                vals = vals.astype(c.numpy_dtype, copy=False)
            else:
                nulls = np.equal(col, None)
                if kind == "O":
                    vals = col.copy()
                else:
                    if nulls.any():
                        col = col.copy()
                        col[nulls] = 0
                    vals = col.astype(c.numpy_dtype)
            out[c.name] = (vals, nulls if nulls.any() else None)
        return out

    def read(self, conn: sa.Connection, where: sa.ColumnElement[bool] | None) -> Columns:
        """Run the SELECT on ``conn`` and return its columns."""
        if self.postgres:
            from apdb.sql.reads import copy_out

            raw = conn.connection.driver_connection
            data = copy_out(raw, self.settings_query(self.copy_query(conn, where)))
            return self.decode_copy(data)
        text, params = self.sql(conn, where)
        if conn.dialect.name == "sqlite":
            cursor = conn.connection.driver_connection.cursor()
            try:
                rows = cursor.execute(text, params).fetchall()
            finally:
                cursor.close()
        else:
            rows = conn.exec_driver_sql(text, params).fetchall()
        return self.decode_rows(rows)

    def explain(
        self,
        conn: sa.Connection,
        where: sa.ColumnElement[bool] | None,
        extra: dict[str, str] | None = None,
        *,
        analyze: bool = False,
    ) -> str:
        """Return PostgreSQL's plan of the read, under the settings the read uses.

        ``extra`` settings are applied on top (e.g. for a test on a tiny
        table, ``{"enable_seqscan": "off"}``).
        """
        text, params = self.sql(conn, where)
        select = psycopg.ClientCursor(conn.connection.driver_connection).mogrify(text, params)
        with planner_settings(conn, {**self.settings, **(extra or {})}):
            head = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
            rows = conn.exec_driver_sql(head + select).fetchall()
        return "\n".join(r[0] for r in rows)


def _inline(stmt: sa.Executable, dialect: sa.Dialect) -> str:
    """Return the SQL of a statement of module constants (rendered inline, no input values)."""
    return str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _settings_sql(settings: dict[str, str], dialect: sa.Dialect) -> tuple[str, str]:
    """``SELECT`` statements that apply ``settings`` locally and that restore them."""
    if not settings or dialect.name != "postgresql":
        return "", ""
    apply, restore = [], []
    for name, value in settings.items():
        saved = f"apdb.saved_{name}"
        apply.append(sa.func.set_config(saved, sa.func.current_setting(name), True))
        apply.append(sa.func.set_config(name, value, True))
        restore.append(sa.func.set_config(name, sa.func.current_setting(saved), True))
    return _inline(sa.select(*apply), dialect), _inline(sa.select(*restore), dialect)


@contextlib.contextmanager
def planner_settings(conn: sa.Connection, settings: dict[str, str]) -> Iterator[None]:
    """Apply PostgreSQL settings for the statements of the block, then restore them.

    ``set_config(..., is_local => true)``: nothing outlives the transaction,
    and the previous values are restored at the end of the block, so the rest
    of a caller's transaction plans as before (after an error the transaction
    is aborted and its rollback undoes them).
    """
    if not settings:
        yield
        return
    previous = {}
    for name, value in settings.items():
        old = sa.func.current_setting(name)
        new = sa.func.set_config(name, value, True)
        previous[name] = conn.execute(sa.select(old, new)).one()[0]
    yield
    for name, value in previous.items():
        conn.execute(sa.select(sa.func.set_config(name, value, True)))


_PLANS: weakref.WeakKeyDictionary[sa.Table, dict[str, ReadPlan]] = weakref.WeakKeyDictionary()


def read_plan(table: sa.Table, dialect: sa.Dialect) -> ReadPlan:
    """Return the `ReadPlan` of ``table`` for ``dialect``, built on first use.

    Cached with the `sqlalchemy.Table` object: every `ApdbSql` has its own
    `sqlalchemy.MetaData`, so plans live as long as the `ApdbSql` that uses them.
    """
    per_table = _PLANS.setdefault(table, {})
    plan = per_table.get(dialect.name)
    if plan is None:
        plan = per_table[dialect.name] = ReadPlan(table, dialect)
    return plan
