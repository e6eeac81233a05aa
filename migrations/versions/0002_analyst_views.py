"""analyst views (latest DiaObjects, light curves) and a read-only role

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 21:10:00

Views make the common questions one SELECT away:

- ``DiaObjectLatest``: the current version of every DiaObject;
- ``DiaLightCurve``: detections and forced measurements of each DiaObject,
  one row per measurement, with ``kind`` = 'detection' or 'forced'.

On PostgreSQL a NOLOGIN role ``apdb_reader`` (created if missing; roles are
per server) gets SELECT on the tables and views and on ``alembic_version``
(opening an APDB checks its revision); analysts' login roles can be granted
it.  Revisions that add tables grant SELECT on them to it.
"""

from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_LATEST = """
CREATE VIEW "DiaObjectLatest" AS
SELECT * FROM "DiaObject" WHERE "validityEndMjdTai" IS NULL
"""

_LIGHT_CURVE = """
CREATE VIEW "DiaLightCurve" AS
SELECT "diaObjectId", 'detection' AS kind, "diaSourceId" AS "measurementId", visit, detector,
       band, "midpointMjdTai", ra, dec, "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr"
FROM "DiaSource" WHERE "diaObjectId" IS NOT NULL
UNION ALL
SELECT "diaObjectId", 'forced' AS kind, "diaForcedSourceId" AS "measurementId", visit, detector,
       band, "midpointMjdTai", ra, dec, "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr"
FROM "DiaForcedSource"
"""

_TABLES = ["DiaObject", "DiaSource", "DiaForcedSource", "SSObject", "SSSource",
           "ApdbVisitDetector", "metadata", "DiaObjectLatest", "DiaLightCurve"]


def upgrade() -> None:
    op.execute(_LATEST)
    op.execute(_LIGHT_CURVE)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DO $$ BEGIN "
            "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'apdb_reader') THEN "
            "CREATE ROLE apdb_reader NOLOGIN; END IF; END $$"
        )
        for name in _TABLES:
            op.execute(f'GRANT SELECT ON "{name}" TO apdb_reader')
        op.execute("GRANT SELECT ON alembic_version TO apdb_reader")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("REVOKE SELECT ON alembic_version FROM apdb_reader")
        for name in _TABLES:
            op.execute(f'REVOKE SELECT ON "{name}" FROM apdb_reader')
    op.execute('DROP VIEW "DiaLightCurve"')
    op.execute('DROP VIEW "DiaObjectLatest"')
