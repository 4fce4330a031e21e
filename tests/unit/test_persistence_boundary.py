"""The persistence boundary: SQL is written only in the persistence package (services/core/adapters/store/)
and the database plumbing (services/core/adapters/db/: pool, migrations). Entrypoints and use cases run none:
they call application functions (services/core/application/) and repositories. Each table is written by one
aggregate of the store.

A module "has SQL" when a string literal in it (docstrings aside) reads as a statement — SELECT ... FROM,
INSERT INTO, UPDATE <table> SET, DELETE FROM — or when it calls .fetch/.fetchrow/.fetchval/.execute/
.executemany on anything (asyncpg's statement methods)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
PERSISTENCE = ("core/adapters/store/", "core/adapters/db/")
STATEMENT = re.compile(r"\bSELECT\b[\s\S]*?\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+[A-Za-z_][A-Za-z0-9_.]*\s+SET\b"
                       r"|\bDELETE\s+FROM\b")
STATEMENT_METHODS = frozenset({"fetch", "fetchrow", "fetchval", "execute", "executemany"})


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal (an f-string's fixed parts joined around a placeholder), docstrings aside."""
    skip = _docstrings(tree)
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                           for v in node.values)
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip \
                and id(node) not in inside_fstrings:
            found.append((node.lineno, node.value))
    return found


def sql_in(source: str, name: str = "<source>") -> list[str]:
    """Where the module has SQL: 'line N: ...' for each statement literal and statement-method call."""
    tree = ast.parse(source, name)
    found = [f"line {line}: {' '.join(text.split())[:60]!r}" for line, text in _literals(tree)
             if STATEMENT.search(text)]
    found += [f"line {node.lineno}: .{node.func.attr}(...)" for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in STATEMENT_METHODS]
    return found


def _modules() -> dict[str, list[str]]:
    return {p.relative_to(SERVICES).as_posix(): sql_in(p.read_text(), str(p)) for p in sorted(SERVICES.rglob("*.py"))}


def test_http_entrypoints_run_no_sql() -> None:
    offenders = {name: where for name, where in _modules().items() if name.startswith("subscriber/") and where}
    assert offenders == {}, "services/subscriber/ calls application functions and repositories, never SQL"


def test_sql_only_in_the_persistence_package() -> None:
    offenders = {name: where for name, where in _modules().items() if where and not name.startswith(PERSISTENCE)}
    assert offenders == {}, "put the statement in a repository of services/core/adapters/store/"


def test_the_check_sees_sql() -> None:  # the checks above would pass vacuously if the detector found nothing
    assert sql_in('await pool.fetchval("SELECT 1")')
    assert sql_in('x = f"UPDATE mailbox_connections SET next_poll_at = now() WHERE {scope}"')
    assert sql_in('q = ("DELETE FROM oauth_states"\n     " WHERE state_id = $1")')
    assert sql_in("async def f(c):\n    await c.execute(q)")
    assert not sql_in('"""Select the mailbox from the list; UPDATE the page."""\nx = "selected from"')
    assert _modules()["core/adapters/store/mailbox/connections.py"]


WRITE = re.compile(r"\bINSERT\s+INTO\s+([a-z_]+)|\bUPDATE\s+([a-z_]+)(?:\s+(?!SET\b)[a-z_]+)?\s+SET\b"
                   r"|\bDELETE\s+FROM\s+([a-z_]+)", re.IGNORECASE)
STORE = SERVICES / "core" / "adapters" / "store"


def tables_written(source: str) -> set[str]:
    return {next(g for g in m.groups() if g).lower() for m in WRITE.finditer(source)}


def test_each_table_has_one_writing_aggregate() -> None:
    """An aggregate is a package of the store (mailbox/, engagement/) or a module of its own; only it writes
    its tables, so a rule about a table's rows is enforced in one place."""
    writers: dict[str, set[str]] = {}
    for path in sorted(STORE.rglob("*.py")):
        aggregate = path.relative_to(STORE).parts[0].removesuffix(".py")
        for table in tables_written(path.read_text()):
            writers.setdefault(table, set()).add(aggregate)
    shared = {table: sorted(by) for table, by in writers.items() if len(by) > 1}
    assert shared == {}, "move the statement into the repository of the table's aggregate"
    assert writers["mailbox_connections"] == {"mailbox"} and writers["engagements"] == {"engagement"}


def test_the_write_check_sees_writes() -> None:
    assert tables_written("INSERT INTO outbox (a) VALUES (1)") == {"outbox"}
    assert tables_written("UPDATE mailbox_connections c SET x = 1") == {"mailbox_connections"}
    assert tables_written("WITH gone AS (DELETE FROM outbox WHERE true) SELECT 1") == {"outbox"}
    assert tables_written("SELECT 1 FROM subscriptions FOR UPDATE SKIP LOCKED") == set()
