"""The end-to-end alert-production pipeline: per-visit chain, runner, command line."""
