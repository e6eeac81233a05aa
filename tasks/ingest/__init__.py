"""Bring a user's own data to the pipeline.

- `tasks.ingest.mapping`: the column mapping of a detection catalog (YAML);
- `tasks.ingest.catalog`: read Parquet/CSV detection catalogs into DiaSources;
- `tasks.ingest.ztf`: ZTF alert archives (Avro or Parquet packets) into DiaSources;
- `tasks.ingest.catalog_run`: catalog-only mode (association, APDB, alerts);
- `tasks.ingest.profiles` and `tasks.ingest.fits_ingest`: calibrated FITS
  images into the data layout through instrument profiles.
"""

from tasks.ingest.errors import IngestError

__all__ = ["IngestError"]
