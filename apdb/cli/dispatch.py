"""Subcommand dispatch shared by the ``apdb`` and ``apdb-pipeline`` command lines.

A subcommand module exposes ``configure_parser(parser)`` and
``main(args) -> int``.  Every module is imported when the parser is built
(their arguments make the help text), so a command line lists exactly the
commands it ships; modules keep their heavy imports inside ``main``.
`run_command` runs the chosen subcommand: an expected error becomes one line
on stderr and a non-zero status, and a reader that stops early (``| head``)
ends the output quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["build_dispatch_parser", "run_command"]


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


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    errors: tuple[type[BaseException], ...],
) -> int:
    """Parse ``argv``, run the subcommand and return its exit status.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`
        A parser from `build_dispatch_parser`.
    argv : sequence of `str`, optional
        Arguments (default: ``sys.argv[1:]``).
    errors : `tuple` [`type`]
        Exceptions reported as ``PROG COMMAND: error: MESSAGE`` (on one line)
        with status 2; `OSError` (a path that cannot be read or written) too.

    Returns
    -------
    status : `int`
        The subcommand's status; 2 for an error in ``errors``; 1 when the
        reader of standard output went away (a broken pipe), with nothing
        more printed.
    """
    args = parser.parse_args(argv)
    try:
        status = int(args._module.main(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `head`) closed the pipe: point stdout at /dev/null so
        # that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except (*errors, OSError) as exc:
        # One line, whatever the message holds (a path error names the path).
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return 2
    return status
