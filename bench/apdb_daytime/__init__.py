"""Daytime APDB operations benchmark (ours against ``lsst-dax-apdb``)."""
