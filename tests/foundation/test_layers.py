"""The apps' dependency direction (docs/architecture.md): identity <-
networking <- compute <- reservations <- console, an arrow meaning "may be
imported by". config is the plumbing every app uses; nothing imports the
console, which drives them all."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["identity", "networking", "compute", "reservations", "console"]


def imported_apps(path: Path) -> set[str]:
    """The top-level packages among LAYERS that a module imports, at its
    top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(LAYERS)
    return found


def upward_imports(app: str) -> list[str]:
    above = set(LAYERS[LAYERS.index(app) + 1 :]) if app in LAYERS else {"console"}
    return [
        f"{path.relative_to(ROOT)} imports {sorted(imported_apps(path) & above)}"
        for path in sorted((ROOT / app).rglob("*.py"))
        if imported_apps(path) & above
    ]


@pytest.mark.parametrize("app", ["config", *LAYERS])
def test_an_app_imports_only_the_apps_below_it(app):
    assert upward_imports(app) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    (tmp_path / "identity").mkdir()
    (tmp_path / "identity" / "bad.py").write_text("def f():\n    from compute.models import Host\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert upward_imports("identity") == ["identity/bad.py imports ['compute']"]
