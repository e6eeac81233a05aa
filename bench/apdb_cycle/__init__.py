"""APDB cycle benchmark: our `apdb` against Rubin's ``lsst-dax-apdb`` (see README.md)."""
