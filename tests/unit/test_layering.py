"""Import boundaries that keep the layers apart: only the Kafka adapter speaks aiokafka, and only the HTTP
entrypoints (and the helpers that serve them) build aiohttp.web applications."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
KAFKA_ADAPTER = {"core/adapters/kafka.py"}
# Where HTTP is served: the subscriber's handlers, each service's wiring, the shared serve/health helpers,
# and the sandbox (a stand-in for Microsoft, not part of the production path).
WEB_ENTRYPOINTS = ("subscriber/", "sandbox/", "matcher/app.py", "renewer/app.py", "core/adapters/runtime.py",
                   "core/adapters/observability.py")


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
    assert "aiokafka" in modules["core/adapters/kafka.py"] and "aiohttp.web" in modules["subscriber/app.py"]


# --- the layers of services/core (docs/design.md#layout) ------------------------------------------------------

LAYERS = ("domain", "application", "adapters")
ENTRYPOINTS = ("services.subscriber", "services.matcher", "services.renewer", "services.cli")
DOMAIN_MAY_IMPORT = ("msgspec", "services.core.domain")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _layer(module: str) -> list[tuple[str, set[str]]]:
    return [(name, imports) for name, imports in _modules() if name.startswith(f"core/{module}/")]


def test_services_core_is_the_three_layers() -> None:
    core = SERVICES / "core"
    found = sorted(p.name for p in core.iterdir() if p.name != "__pycache__")
    assert found == sorted(["__init__.py", *LAYERS])


def test_the_domain_is_pure() -> None:
    """Rules and types only: the standard library, msgspec and the domain itself (no database, HTTP, Kafka,
    Graph, clock-reading adapters)."""
    offenders = {name: sorted(i for i in imports if _top(i) not in sys.stdlib_module_names
                              and not i.startswith(DOMAIN_MAY_IMPORT))
                 for name, imports in _layer("domain")}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_inner_layers_never_import_outer_ones() -> None:
    forbidden = {"domain": ("services.core.application", "services.core.adapters", *ENTRYPOINTS),
                 "application": ENTRYPOINTS,
                 "adapters": ("services.core.application", *ENTRYPOINTS)}
    offenders = {name: sorted(i for i in imports if i.startswith(forbidden[layer]))
                 for layer in LAYERS for name, imports in _layer(layer)}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_layer_checks_see_imports() -> None:
    layers = {layer: dict(_layer(layer)) for layer in LAYERS}
    assert all(layers.values())
    assert "msgspec" in layers["domain"]["core/domain/event_types.py"]
    assert any(i.startswith("services.core.adapters") for i in layers["application"]["core/application/outbox.py"])
