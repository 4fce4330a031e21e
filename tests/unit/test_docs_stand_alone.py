"""The repository stands alone: design, contract and Graph facts live in its own docs/.

No tracked file outside docs/ may point at the documents that used to live outside the repository, and
every `docs/<name>.md#anchor` cited in services/ or tests/ must be a heading anchor of that document
(an explicit `{#anchor}` on the heading, or the slug GitHub derives from the heading's text).
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Spelled in pieces so this file does not match its own check.
OUTSIDE_DOCUMENTS = ("/work/" + "shared", "GRAPH-" + "FACTS.md", "CONTRACT" + ".md", "DESIGN" + ".md",
                     "KAFKA-" + "LOCAL.md")
CITATION = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)#([A-Za-z0-9_-]+)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
EXPLICIT_ANCHOR = re.compile(r"\{#([A-Za-z0-9_-]+)\}\s*$")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def read_text(name: str) -> str | None:
    try:
        return (REPO / name).read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # binary, or deleted in the work tree


def github_slug(text: str) -> str:
    text = re.sub(r"`|\*|_(?=\w)|(?<=\w)_", "", text.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(doc: str) -> frozenset[str]:
    text = read_text(f"docs/{doc}")
    return frozenset() if text is None else anchors_of(text)


def anchors_of(text: str) -> frozenset[str]:
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = HEADING.match(line)
        if fenced or match is None:
            continue
        heading = match.group(1)
        explicit = EXPLICIT_ANCHOR.search(heading)
        if explicit:
            found.add(explicit.group(1))
            heading = heading[: explicit.start()]
        found.add(github_slug(heading))
    return frozenset(found)


def test_no_tracked_file_outside_docs_points_outside_the_repository() -> None:
    offenders = []
    for name in tracked_files():
        if name.startswith("docs/"):
            continue
        text = read_text(name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for outside in OUTSIDE_DOCUMENTS:
                if outside in line:
                    offenders.append(f"{name}:{number}: {outside}")
    assert not offenders, "cite docs/<name>.md#anchor instead:\n" + "\n".join(offenders)


def cited_anchors() -> list[tuple[str, int, str, str]]:
    cited = []
    for name in tracked_files():
        if not name.startswith(("services/", "tests/")):
            continue
        text = read_text(name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for match in CITATION.finditer(line):
                cited.append((name, number, match.group(1), match.group(2)))
    return cited


def test_code_cites_the_docs_somewhere() -> None:
    # A positive control: if the citation pattern stopped matching, the anchor check below would pass vacuously.
    docs = {doc for _, _, doc, _ in cited_anchors()}
    assert {"graph.md", "design.md", "contract.md"} <= docs


def test_every_cited_anchor_exists() -> None:
    missing = [f"{name}:{number}: docs/{doc}#{anchor}" for name, number, doc, anchor in cited_anchors()
               if anchor not in anchors(doc)]
    assert not missing, "no such heading anchor:\n" + "\n".join(missing)


@pytest.mark.parametrize(("heading", "anchor"), [
    ("## Throttling {#throttling}", "throttling"),
    ("### JSON batching", "json-batching"),
    ("## Identity platform: authorize and token endpoints", "identity-platform-authorize-and-token-endpoints"),
    ("#### `.mailsync/` files", "mailsync-files"),
])
def test_heading_anchors(heading: str, anchor: str) -> None:
    assert anchor in anchors_of(f"# Title\n\n{heading}\n\ntext\n")


def test_headings_in_code_blocks_are_not_anchors() -> None:
    assert "not-a-heading" not in anchors_of("```\n# not a heading\n```\n")
