"""The sandbox and the demo are their own distribution (`sandbox/`, mailsync-sandbox), never part of the
production package or image: `services/` holds neither, no `services/` module imports them except the two
lazy imports behind `mailsync sandbox` and `mailsync demo`, and without them those commands say so in one line.
The sandbox, a stand-in for Microsoft, imports nothing from `services/` either."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import cli

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SANDBOX = ROOT / "sandbox" / "mailsync_sandbox"
DEV_PACKAGES = ("mailsync_sandbox", "mailsync_demo")
# (module, enclosing function, package): the only places production code may name the development tools.
LAZY_IMPORTS = {("cli.py", "cmd_sandbox", "mailsync_sandbox"), ("cli.py", "cmd_demo", "mailsync_demo")}


def _imports(path: Path) -> Iterator[tuple[str, str]]:
    """(enclosing function or "", imported module) for every import in the file, nested ones included."""
    def visit(node: ast.AST, function: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((function, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                yield function, child.module
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            yield from visit(child, inner)

    yield from visit(ast.parse(path.read_text(), str(path)), "")


def _package(module: str, packages: tuple[str, ...]) -> str | None:
    return next((p for p in packages if module == p or module.startswith(p + ".")), None)


def test_services_holds_neither_the_sandbox_nor_the_demo() -> None:
    assert (SANDBOX / "__init__.py").is_file() and (ROOT / "sandbox" / "mailsync_demo.py").is_file()
    strays = [p.relative_to(ROOT).as_posix() for p in SERVICES.rglob("*")
              if p.name in ("sandbox", "demo.py", *DEV_PACKAGES) or (p.name == "local_ca.py")]
    assert strays == [], "the sandbox and the demo belong in sandbox/, outside the production package"


def test_services_import_the_sandbox_only_lazily_from_the_cli() -> None:
    found = {(p.relative_to(SERVICES).as_posix(), function, package)
             for p in sorted(SERVICES.rglob("*.py")) for function, module in _imports(p)
             if (package := _package(module, DEV_PACKAGES))}
    assert found == LAZY_IMPORTS  # equality: the check also sees the two imports it allows


def test_the_sandbox_imports_nothing_from_the_services() -> None:
    modules = sorted(SANDBOX.rglob("*.py"))
    imported = [(p.name, module) for p in modules for _, module in _imports(p)]
    assert ("app.py", "mailsync_sandbox.state") in imported  # the walk sees the sandbox's own imports
    assert [(name, m) for name, m in imported if _package(m, ("services", "mailsync_demo"))] == []


@pytest.mark.parametrize(("argv", "package"), [(["sandbox"], "mailsync_sandbox"), (["demo", "seed"], "mailsync_demo")])
def test_without_the_sandbox_installed_the_command_says_so(argv: list[str], package: str,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # as in the production image: the import fails
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "development tool" in err and "./sandbox" in err
