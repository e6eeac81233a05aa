"""The README and docs/ stay true: every command is documented, documented commands exist.

- every subcommand of ``apdb`` and ``apdb-pipeline`` has a line in
  ``docs/cli.md`` carrying its help text, and its ``--help`` runs;
- every ``apdb``/``apdb-pipeline`` command shown in a code block of the
  README or of docs/ names a subcommand that exists and options that its
  parser accepts;
- the README stays a first page (at most 150 lines) and links every file of
  docs/.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from apdb.cli import SUBCOMMANDS as APDB_COMMANDS
from apdb.cli import build_parser as apdb_parser
from tasks.cli import SUBCOMMANDS as PIPELINE_COMMANDS
from tasks.cli import build_parser as pipeline_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

PROGRAMS = {
    "apdb": (APDB_COMMANDS, apdb_parser),
    "apdb-pipeline": (PIPELINE_COMMANDS, pipeline_parser),
}
ALL_COMMANDS = [(prog, name) for prog, (cmds, _) in PROGRAMS.items() for name in cmds]


def _code_blocks(path: Path) -> list[str]:
    """Lines inside fenced code blocks of a markdown file."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(line)
    return lines


def _documented_commands(path: Path) -> list[list[str]]:
    """Command lines (``apdb ...``/``apdb-pipeline ...``) shown in code blocks."""
    commands = []
    text = "\n".join(_code_blocks(path)).replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip().removeprefix("$ ")
        for part in re.split(r"&&|\|\||;|\|", line):
            part = part.strip()
            if re.match(r"^(apdb|apdb-pipeline)\s", part):
                try:
                    commands.append(shlex.split(part, comments=True))
                except ValueError:
                    commands.append(part.split())
    return commands


@pytest.mark.parametrize(("prog", "name"), ALL_COMMANDS)
def test_every_command_is_documented_with_its_help(prog: str, name: str) -> None:
    cli_doc = (DOCS / "cli.md").read_text()
    help_text = PROGRAMS[prog][0][name][1]
    lines = [line for line in cli_doc.splitlines() if f"`{prog} {name}" in line]
    assert lines, f"docs/cli.md does not document `{prog} {name}`"
    assert any(help_text in line for line in lines), (
        f"docs/cli.md's line for `{prog} {name}` lacks its help text {help_text!r}"
    )


@pytest.mark.parametrize(("prog", "name"), ALL_COMMANDS)
def test_every_command_help_runs(prog: str, name: str) -> None:
    module = {"apdb": "apdb.cli", "apdb-pipeline": "tasks.cli"}[prog]
    result = subprocess.run(
        [sys.executable, "-m", module, name, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"{name}" in result.stdout
    assert "usage:" in result.stdout


DOC_FILES = [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_documented_commands_parse(path: Path) -> None:
    """Each documented command names a real subcommand with accepted options."""
    for argv in _documented_commands(path):
        prog, args = argv[0], argv[1:]
        commands, build = PROGRAMS[prog]
        if not args or args[0].startswith("-"):
            continue
        assert args[0] in commands, f"{path.name}: `{' '.join(argv)}`: no such command"
        # Placeholders such as URL or FILE.avro parse as positional values.
        try:
            build().parse_args(args)
        except SystemExit as exc:  # argparse exits on unknown options
            raise AssertionError(f"{path.name}: `{' '.join(argv)}` does not parse") from exc


def test_readme_is_a_first_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for doc in sorted(DOCS.glob("*.md")):
        assert f"docs/{doc.name}" in text, f"README does not link docs/{doc.name}"
    # The two set-up commands of a newcomer.
    blocks = "\n".join(_code_blocks(README))
    assert "apdb-pipeline demo" in blocks
    assert "python -m pytest" in blocks
