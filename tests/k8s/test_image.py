"""The container image, checked by reading: no Docker engine runs here, so the Dockerfile's structure
and the build context (.dockerignore) are asserted instead of built."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from tests.k8s import tools

DOCKERFILE = tools.REPO / "Dockerfile"
DOCKERIGNORE = tools.REPO / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|libc6-dev|python3-dev|apt-get|apk)\b")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


def _stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_two_stages_on_the_same_slim_python_3_11() -> None:
    _, stages = _stages()
    assert len(stages) == 2, "a builder and a runtime stage"
    builder, runtime = stages
    assert builder.name == "builder"
    assert builder.base == runtime.base, "the venv's interpreter symlink needs the same base image"
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", runtime.base), runtime.base


def test_the_builder_installs_the_project_into_a_venv() -> None:
    _, (builder, _) = _stages()
    runs = " && ".join(builder.all("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert re.search(r"\bpip install \.(\s|$)", runs), "pip install . (not editable, not from an index)"
    assert "-e ." not in runs and "--editable" not in runs


def test_the_runtime_stage_has_only_the_venv_and_no_build_tools() -> None:
    _, (_, runtime) = _stages()
    copies = runtime.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"], f"the runtime copies only the venv: {copies}"
    for run in runtime.all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tooling in the runtime stage: {run}"
        assert "pip install" not in run


def test_the_runtime_runs_mailsync_as_a_numeric_non_root_user() -> None:
    _, (_, runtime) = _stages()
    (user,) = runtime.all("USER")
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER must be numeric and not root (runAsNonRoot checks it): {user}"
    assert int(uid) == 10001, "the manifests' runAsUser"
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["mailsync"], "the service is chosen by argument"
    env = _env(runtime)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1" and env.get("PYTHONUNBUFFERED") == "1"
    assert "/opt/venv/bin" in env.get("PATH", "")


@pytest.mark.parametrize("path, sent", [
    ("pyproject.toml", True), ("services/cli.py", True),
    ("services/core/adapters/db/migrations/0001_initial.sql", True),
    (".venv/bin/python", False), (".git/config", False), (".cache/bin/kustomize", False),
    (".mailsync/stack.json", False), ("tests/conftest.py", False), ("services/__pycache__/cli.cpython-311.pyc", False),
])
def test_the_build_context_holds_only_what_pip_install_needs(path: str, sent: bool) -> None:
    # .dockerignore semantics for the patterns used here: the last matching line wins; `!` re-includes.
    included = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\[cod\]", "[cod]")
        if re.fullmatch(f"{regex}(/.*)?", path):
            included = negate
    assert included is sent, f"{path} {'must' if sent else 'must not'} reach the build context"
