"""Import boundaries that keep the layers apart: only the Kafka adapter speaks aiokafka, and only the HTTP
entrypoints (and the helpers that serve them) build aiohttp.web applications."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
KAFKA_ADAPTER = {"core/kafka.py"}
# Where HTTP is served: the subscriber's handlers, each service's wiring, the shared serve/health helpers,
# and the sandbox (a stand-in for Microsoft, not part of the production path).
WEB_ENTRYPOINTS = ("subscriber/", "sandbox/", "matcher/app.py", "renewer/app.py", "core/runtime.py",
                   "core/observability.py")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> list[tuple[str, set[str]]]:
    return [(p.relative_to(SERVICES).as_posix(), _imports(p)) for p in sorted(SERVICES.rglob("*.py"))]


def test_only_the_kafka_adapter_imports_aiokafka() -> None:
    offenders = [name for name, imports in _modules()
                 if name not in KAFKA_ADAPTER and any(i == "aiokafka" or i.startswith("aiokafka.") for i in imports)]
    assert offenders == []


def test_only_http_entrypoints_import_aiohttp_web() -> None:
    offenders = [name for name, imports in _modules()
                 if not name.startswith(WEB_ENTRYPOINTS) and (imports & {"aiohttp.web", "aiohttp.web_request"}
                                                               or any(i.startswith("aiohttp.web") for i in imports))]
    assert offenders == []


def test_the_check_sees_imports() -> None:  # the two checks above would pass vacuously if parsing found nothing
    modules = dict(_modules())
    assert "aiokafka" in modules["core/kafka.py"] and "aiohttp.web" in modules["subscriber/app.py"]
