"""RSS of every service process."""

from __future__ import annotations

from tests.bench.harness import BenchStack, rss_mib


async def measure(bench: BenchStack, label: str) -> dict[str, float | str]:
    figures: dict[str, float | str] = {"when": label}
    for name in ("subscriber", "matcher", "renewer", "sandbox"):
        figures[f"{name}_rss_mib"] = rss_mib(bench.pid(name))
    return figures
