"""Citus benchmark: the concurrent detector cycle on a coordinator + 2 workers vs one server."""
