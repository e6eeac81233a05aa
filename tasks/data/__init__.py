"""On-disk data: the directory layout a user points the pipeline at, and the sky map."""
