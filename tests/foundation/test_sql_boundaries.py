"""No SQL text outside an app's queries.py. Apps pass each other querysets,
ORM expressions or ids; what the ORM cannot say is one of a handful of
named statements in the app's queries.py (docs/architecture.md)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_APPS = {"tests", "bench"}
MOST_STATEMENTS = 6
# Whole statements, as their first word says (upper case: prose that starts
# with "Update" or names an HTTP method alone is no statement).
STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\s")
# Pieces of one: a clause no prose has, or a placeholder compared with.
FRAGMENT = re.compile(
    r"\b(FOR UPDATE|FOR SHARE|SKIP LOCKED|ON CONFLICT|EXISTS \(|IN \(SELECT)"
    r"|(=|<|>|\bIN|\bLIKE)\s*\(?%(\(\w+\))?s"
)
# Ways to send SQL text past the ORM.
RAW_METHODS = {"cursor", "execute", "executemany", "raw", "extra"}
RAW_NAMES = {"RawSQL"}


def sources() -> list[str]:
    """The project's modules: every package at the top but the tests and
    the benchmarks, without migrations."""
    apps = [p.parent for p in ROOT.glob("*/__init__.py") if p.parent.name not in NOT_APPS]
    return sorted(
        path.relative_to(ROOT).as_posix()
        for app in apps
        for path in app.rglob("*.py")
        if "migrations" not in path.parts
    )


def _docstrings(tree: ast.Module) -> set[int]:
    """Ids of the docstring nodes: prose, whatever its first word."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's literal parts, the values
    between them as {}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
        )
    return None


def sql_in(source: str) -> tuple[list[str], int]:
    """(every SQL text and raw call found, with its line; how many whole
    statements there are)."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    inside_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    found, statements = [], 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if (isinstance(called, ast.Attribute) and name in RAW_METHODS) or name in RAW_NAMES:
                found.append((node.lineno, f"{name}()"))
            continue
        if id(node) in prose or id(node) in inside_fstrings:
            continue
        text = _text(node)
        if text is None:
            continue
        if STATEMENT.search(text):
            statements += 1
        if STATEMENT.search(text) or FRAGMENT.search(text):
            found.append((node.lineno, text[:60]))
    return [f"line {line}: {what}" for line, what in sorted(found)], statements


def _cases() -> list:
    return [path for path in sources() if Path(path).name != "queries.py"]


@pytest.mark.parametrize("path", _cases())
def test_no_sql_text_outside_queries_modules(path):
    found, _ = sql_in((ROOT / path).read_text())
    assert found == [], f"{path} has SQL text; use the ORM or the app's queries.py"


@pytest.mark.parametrize("path", [p for p in sources() if Path(p).name == "queries.py"])
def test_a_queries_module_holds_a_handful_of_statements(path):
    _, statements = sql_in((ROOT / path).read_text())
    assert 0 < statements <= MOST_STATEMENTS


def test_the_scan_finds_statements_fragments_and_raw_calls():
    source = '''
"""SELECT in a docstring is prose."""
CLAIM = "UPDATE compute_host SET vcpus_used = vcpus_used + %s WHERE id = %s"
probe = f"SELECT 1 FROM compute_host h WHERE {where} LIMIT 1"
avoid = "EXISTS (SELECT 1 FROM reservations_reservablehost r WHERE r.host_id = h.id)"
fragment = "h.free_ram >= %s"
prose = "Update the port, then DELETE it"
with connection.cursor() as cursor:
    cursor.execute(CLAIM)
Host.objects.raw("x")
'''
    found, statements = sql_in(source)
    assert [line.split(":")[0] for line in found] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 8",
        "line 9",
        "line 10",
    ]
    assert statements == 2
