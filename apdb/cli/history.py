"""``apdb history``: list the schema revisions shipped with this package."""

from __future__ import annotations

import argparse

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``apdb history`` takes no arguments."""


def main(args: argparse.Namespace) -> int:
    """Print the revisions, newest first."""
    from apdb import migrate

    for rev, down, message in migrate.history():
        first = message.strip().splitlines()[0] if message.strip() else ""
        print(f"{down or 'base'} -> {rev}: {first}")
    return 0
