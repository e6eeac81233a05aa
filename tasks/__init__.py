"""Pipeline tasks: images, simulation, association, characterization, templates, alerts.

Each subpackage holds one task (or one family of tasks) and talks to the
database only through the public `apdb` API.
"""
