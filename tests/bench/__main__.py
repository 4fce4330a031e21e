"""`make bench`: one table of figures, each a ratio against a baseline measured in the same run.

Runs against the real Kafka and PostgreSQL that `stack.py infra-exec` started, the sandbox and the
services as separate processes (like production), on this machine. Writes bench/results.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.bench import (
    directory_scale,
    end_to_end,
    intake,
    matcher_cost,
    memory,
    polling,
    reauthorization,
    renewer_scale,
    tenant_control_plane,
)
from tests.bench.harness import BenchStack

ROOT = Path(__file__).resolve().parents[2]


async def main() -> int:
    results: dict[str, dict[str, float | str]] = {}
    stack = await BenchStack.start()
    try:
        results["memory_idle"] = await memory.measure(stack, "idle")
        results["webhook_intake"] = await intake.run(stack)
        results["matcher_cost"] = await matcher_cost.run(stack)
        results["end_to_end"] = await end_to_end.run(stack)
        results["delta_poll"] = await polling.run(stack)
        results["directory_scale"] = await directory_scale.run(stack)
        results["reauthorization_idle"] = await reauthorization.run(stack)
        results["tenant_control_plane"] = await tenant_control_plane.run(stack)
        results["memory_after_load"] = await memory.measure(stack, "after load")
        # Last: it stops and restarts the renewer and leaves 10,000 mailboxes in the sandbox.
        results["renewer_scale"] = await renewer_scale.run(stack)
    finally:
        await stack.stop()
    out = ROOT / "bench" / "results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return 0


def print_table(results: dict[str, dict[str, float | str]]) -> None:
    rows = [(section, key, value) for section, figures in results.items() for key, value in figures.items()]
    width = max(len(f"{s}.{k}") for s, k, _ in rows)
    print(f"\n{'figure'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for section, key, value in rows:
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{f'{section}.{key}'.ljust(width)}  {shown}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
