"""Validates an event against its schema in docs/asyncapi.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

DOC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml").read_text())


def schema_for(event_type: str) -> dict[str, Any]:
    for message in DOC["components"]["messages"].values():
        if message["name"] == event_type:
            ref = message["payload"]["$ref"].rsplit("/", 1)[-1]
            return {"$ref": f"#/components/schemas/{ref}", "components": DOC["components"]}
    raise AssertionError(f"{event_type} is not in docs/asyncapi.yaml")


def validate(event: dict[str, Any]) -> None:
    Draft202012Validator(schema_for(event["type"]), format_checker=Draft202012Validator.FORMAT_CHECKER
                         ).validate(event)
