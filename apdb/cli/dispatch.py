"""Lazy subcommand dispatch shared by the ``apdb`` and ``apdb-pipeline`` command lines.

A subcommand module exposes ``configure_parser(parser)`` and
``main(args) -> int``; modules are imported when the parser is built, one per
subcommand, so a command line lists exactly the commands it ships.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping

__all__ = ["build_dispatch_parser"]


def build_dispatch_parser(
    prog: str, description: str, subcommands: Mapping[str, tuple[str, str]]
) -> argparse.ArgumentParser:
    """Build a parser whose subcommands are implemented by modules.

    Parameters
    ----------
    prog : `str`
        Program name.
    description : `str`
        One-line description of the program.
    subcommands : `dict` [`str`, `tuple` [`str`, `str`]]
        Subcommand name → (module name, one-line help).

    Returns
    -------
    parser : `argparse.ArgumentParser`
        Parsed arguments carry the subcommand's module as ``_module``.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in subcommands.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser
