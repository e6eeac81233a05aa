"""Layout rules of the code base, checked on the source with `ast`.

- No import cycles among the modules of ``apdb`` and ``tasks`` (imports that
  run when a module is imported: module level, outside ``TYPE_CHECKING``).
- The lower layers of ``tasks`` (``tasks.core``, ``tasks.images``,
  ``tasks.data``) import nothing from the tasks and pipeline above them,
  not even lazily inside a function.
- ``tasks`` reaches the database only through ``apdb``'s public interface:
  no SQLAlchemy, psycopg or sqlite3 there.
- Only ``apdb/sql/`` (and the alembic revisions in ``migrations/``) emits
  SQL: no SQLAlchemy statement constructors, no ``execute`` calls and no
  SQL statements in string literals anywhere else in ``apdb`` or ``tasks``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("apdb", "tasks")
LOWER_LAYERS = ("tasks.core", "tasks.images", "tasks.data")
DATABASE_DRIVERS = ("sqlalchemy", "psycopg", "psycopg2", "sqlite3", "alembic")

# Calls that build or run SQL.
STATEMENT_FUNCTIONS = {"select", "insert", "update", "delete", "text", "literal_column"}
EXECUTE_METHODS = {"execute", "executemany", "executescript", "exec_driver_sql"}
SQL_IN_STRING = re.compile(
    r"\b(SELECT\s+[\w\"*(].*\bFROM\b|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\"?\w+\"?\s+SET"
    r"|(CREATE|DROP|ALTER)\s+(TABLE|DATABASE|INDEX|VIEW|ROLE|EXTENSION|SCHEMA)"
    r"|GRANT\s+\w+\s+ON|TRUNCATE\s+\"?\w|COPY\s*\()",
    re.S,
)

# (module, what) pairs that may stay, each with the reason.
SQL_ALLOWLIST: dict[tuple[str, str], str] = {
    ("tasks.pipeline.demo", "string"): "prints an example sqlite3 query for the user to run",
}


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    runtime_imports: set[str] = field(default_factory=set)
    all_imports: set[str] = field(default_factory=set)


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def discover() -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name, is_package = module_name(path)
            tree = ast.parse(path.read_text(), filename=str(path))
            modules[name] = Module(name, path, tree, is_package)
    for module in modules.values():
        module.runtime_imports, module.all_imports = imports_of(module, modules)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import time: not in functions, not under ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk_runtime(node.orelse)
            continue
        yield node
        for child_body in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, child_body, None)
            if children:
                stmts = []
                for c in children:
                    stmts.extend(c.body if isinstance(c, ast.ExceptHandler) else [c])
                yield from _walk_runtime(stmts)


def _targets(node: ast.stmt, module: Module, modules: dict[str, Module]) -> set[str]:
    """Modules of ours that an import statement loads (the deepest known module)."""
    found = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            found.add(alias.name)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.name if module.is_package else module.name.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add(sub if sub in modules else target)
    return {t for t in found if t.split(".")[0] in PACKAGES and t in modules}


def imports_of(module: Module, modules: dict[str, Module]) -> tuple[set[str], set[str]]:
    runtime = set()
    for node in _walk_runtime(module.tree.body):
        if isinstance(node, ast.Import | ast.ImportFrom):
            runtime |= _targets(node, module, modules)
    every = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            every |= _targets(node, module, modules)
    return runtime - {module.name}, every - {module.name}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return discover()


def test_discovery_sees_the_packages(modules):
    assert {"apdb.apdb", "apdb.sql.apdb_sql", "tasks.core.base", "tasks.pipeline.visit"} <= set(
        modules
    )
    # the import graph is not empty: e.g. the SQL implementation imports the interface
    assert "apdb.apdb" in modules["apdb.sql.apdb_sql"].runtime_imports


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(modules):
    graph = {name: m.runtime_imports for name, m in modules.items()}
    assert find_cycles(graph) == []


def _layer(name: str) -> str | None:
    return next(
        (layer for layer in LOWER_LAYERS if name == layer or name.startswith(layer + ".")), None
    )


def test_lower_layers_do_not_import_tasks_above_them(modules):
    offences = []
    for name, module in modules.items():
        if _layer(name) is None:
            continue
        for target in module.all_imports:
            if target.startswith("tasks") and _layer(target) is None:
                offences.append(f"{name} imports {target}")
    assert offences == []


def test_the_engine_imports_no_task(modules):
    offences = [
        f"{name} imports {target}"
        for name, module in modules.items()
        if name.split(".")[0] == "apdb"
        for target in module.all_imports
        if target.split(".")[0] == "tasks"
    ]
    assert offences == []


def _imported_roots(tree: ast.Module) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_tasks_use_no_database_driver(modules):
    offences = [
        f"{name} imports {sorted(_imported_roots(m.tree) & set(DATABASE_DRIVERS))}"
        for name, m in modules.items()
        if name.startswith("tasks") and _imported_roots(m.tree) & set(DATABASE_DRIVERS)
    ]
    assert offences == []


def sql_findings(module: Module) -> list[tuple[str, int, str]]:
    """(kind, line, text) of SQL built, run or written in a module."""
    sa_names = set()  # local names bound to sqlalchemy modules or statement functions
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    sa_names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            for alias in node.names:
                if alias.name in STATEMENT_FUNCTIONS:
                    sa_names.add(alias.asname or alias.name)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                if func.attr in EXECUTE_METHODS:
                    found.append(("execute", node.lineno, f".{func.attr}()"))
                elif (
                    func.attr in STATEMENT_FUNCTIONS
                    and isinstance(func.value, ast.Name)
                    and func.value.id in sa_names
                ):
                    found.append(("statement", node.lineno, f"{func.value.id}.{func.attr}()"))
            elif isinstance(func, ast.Name) and func.id in sa_names & STATEMENT_FUNCTIONS:
                found.append(("statement", node.lineno, f"{func.id}()"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and SQL_IN_STRING.search(node.value)
        ):
            found.append(("string", node.lineno, node.value.strip()[:60]))
    return found


def test_sql_detector_sees_statements_calls_and_strings():
    source = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy import text\n"
        "def f(conn, t):\n"
        "    conn.execute(sa.select(t))\n"
        "    text('x')\n"
        "    q = 'DELETE FROM \"DiaSource\"'\n"
        "    'CREATE DATABASE x'\n"
    )
    module = Module("x", Path("x.py"), ast.parse(source), False)
    kinds = sorted(kind for kind, _, _ in sql_findings(module))
    assert kinds == ["execute", "statement", "statement", "string", "string"]


def test_only_apdb_sql_emits_sql(modules):
    offences = []
    for name, module in modules.items():
        if name == "apdb.sql" or name.startswith("apdb.sql."):
            continue
        for kind, line, text in sql_findings(module):
            if (name, kind) in SQL_ALLOWLIST:
                continue
            offences.append(f"{module.path.relative_to(ROOT)}:{line}: {kind} {text}")
    assert offences == []


def _band_literals(tree: ast.Module) -> list[int]:
    """Lines of tuple/list/set displays holding exactly the six band letters."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) == 6:
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if sorted(values) == sorted("ugrizy"):
                lines.append(node.lineno)
    return lines


def test_one_band_list(modules):
    from apdb.config import ApdbConfig
    from apdb.schema import BANDS
    from tasks.association import diaobject_stats
    from tasks.images import filters

    spelled = {
        name: _band_literals(m.tree) for name, m in modules.items() if _band_literals(m.tree)
    }
    assert set(spelled) == {"apdb.schema"}, spelled
    assert diaobject_stats.BANDS is BANDS
    assert ApdbConfig().bands == BANDS
    assert tuple(filters.BANDS) == BANDS  # filter curves keyed by the same bands, in order


def test_one_history_window():
    from tasks.pipeline.diapipe import DiaPipelineConfig

    # the pipeline reads the APDB's configured window unless told otherwise
    assert DiaPipelineConfig().historyMonths is None


def test_no_process_words_in_the_code():
    """Docstrings and comments explain the code, not the project's work orders."""
    offences = []
    for folder in (*PACKAGES, "bench", "migrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bContract [A-E]\b", line):
                    offences.append(f"{path.relative_to(ROOT)}:{number}")
    assert offences == []
