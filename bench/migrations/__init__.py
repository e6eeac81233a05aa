"""Benchmark: time and locks of each schema revision on a filled APDB.

``python -m bench.migrations --rows 1000000``: a throwaway PostgreSQL, an
APDB filled through `Apdb.store` with ``--rows`` DiaSources (as many
DiaObjects and DiaForcedSources), then every revision's downgrade (head down
to 0001) and upgrade (back to head) through `apdb.migrate` with an engine,
as ``apdb upgrade`` runs them.  While each step runs, a second connection
samples ``pg_locks`` of the migration's backend every few milliseconds.
Each step's time is reported with its ratio to a full scan of DiaSource
(``count(*)``) measured in the same run, and the strongest lock it held on
the big tables, with how long it was seen held.
"""
