"""APDB scale benchmark (``python -m bench.apdb_scale``)."""
