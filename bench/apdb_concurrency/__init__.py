"""APDB concurrency benchmark: W detector processes on one PostgreSQL, ours vs lsst-dax-apdb."""
