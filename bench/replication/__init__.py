"""Replication benchmark (issue 13): replicator rate vs store rate; LSDB vs SQL reads."""
