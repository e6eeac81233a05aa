"""Alert Production Database (APDB) engine.

Public API::

    from apdb import Apdb, ApdbConfig
    from apdb.sky import Cone, Polygon, footprint_region
    from apdb.errors import ApdbError

    apdb = Apdb.create("sqlite:///apdb.sqlite3")
    apdb.store(visit_time, dia_objects, dia_sources, dia_forced_sources)
    objects = apdb.get_dia_objects(footprint_region(wcs, bbox, margin_arcsec=20.0))
"""

from apdb.apdb import Apdb
from apdb.config import ApdbConfig
from apdb.errors import ApdbError

__all__ = ["Apdb", "ApdbConfig", "ApdbError"]
