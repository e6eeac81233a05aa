"""Sample the table locks a backend holds on given tables while a step runs.

Only ``locktype = 'relation'`` (table locks): the relation-extension locks a
big UPDATE takes (``extend``, shown as ExclusiveLock) and tuple locks do not
make a store wait for the step.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

# Lock modes that conflict with ROW EXCLUSIVE (what a store holds): writers wait.
BLOCKS_WRITERS = {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}
# Strength order of PostgreSQL table lock modes.
ORDER = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
]

_QUERY = """
SELECT c.relname, l.mode
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.application_name = %(app)s AND l.granted AND c.relname = ANY(%(tables)s)
  AND l.locktype = 'relation'
"""


@dataclass
class LockSampler:
    """Poll ``pg_locks`` of the backends named ``app`` in a thread.

    Attributes
    ----------
    held : `dict` [`tuple` [`str`, `str`], `float`]
        (table, mode) -> seconds seen held (samples x interval).
    """

    dsn: str
    app: str
    tables: list[str]
    interval: float = 0.005
    held: dict[tuple[str, str], float] = field(default_factory=dict)

    def __enter__(self) -> LockSampler:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            last = time.perf_counter()
            while not self._stop.is_set():
                rows = conn.execute(_QUERY, {"app": self.app, "tables": self.tables}).fetchall()
                now = time.perf_counter()
                for key in set(rows):
                    self.held[key] = self.held.get(key, 0.0) + (now - last)
                last = now
                time.sleep(self.interval)

    def strongest(self) -> tuple[str, str, float] | None:
        """(table, mode, seconds) of the strongest mode seen, longest-held table first."""
        if not self.held:
            return None
        rank = max(ORDER.index(m) for _, m in self.held)
        mode = ORDER[rank]
        table, seconds = max(
            ((t, s) for (t, m), s in self.held.items() if m == mode), key=lambda x: x[1]
        )
        return table, mode, seconds
