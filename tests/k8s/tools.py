"""Tools the manifest tests need, installed by the project itself into the git-ignored `.cache/bin/`.

kustomize is built from its Go module (the Go module proxy) with the machine's Go toolchain: about
half a minute to three minutes the first time, nothing afterwards. Safe to call from several
processes at once (a file lock serialises the build; the binary appears atomically).

    python -m tests.k8s.tools kustomize            # install if needed, print the binary's path
    python -m tests.k8s.tools build deploy/k8s/overlays/prod   # render an overlay to stdout
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
BIN = CACHE / "bin"

KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
# The newest release whose go.mod accepts Go 1.26 (v5.8.3 requires Go 1.27).
KUSTOMIZE_VERSION = "v5.8.2"
GO_MINIMUM = (1, 26)
INSTALL_TIMEOUT_S = 900

__all__ = ["KUSTOMIZE_VERSION", "ToolError", "build", "kustomize"]


class ToolError(RuntimeError):
    """A tool could not be installed or run; the message says what to do."""


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go() -> str:
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None)
    if go is None:
        raise ToolError("kustomize is built from its Go module, but no `go` command was found "
                        f"(need Go >= {'.'.join(map(str, GO_MINIMUM))}; Debian: apt-get install golang-go)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or not match:
        raise ToolError(f"`{go} env GOVERSION` failed: {out.stderr.strip() or out.stdout.strip()}")
    if (int(match[1]), int(match[2])) < GO_MINIMUM:
        raise ToolError(f"kustomize {KUSTOMIZE_VERSION} needs Go >= {'.'.join(map(str, GO_MINIMUM))}, "
                        f"{go} is {out.stdout.strip()}")
    return go


def _kustomize_works(path: Path) -> bool:
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    try:
        out = subprocess.run([str(path), "version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return out.returncode == 0 and KUSTOMIZE_VERSION in out.stdout


def kustomize() -> Path:
    """The path of kustomize KUSTOMIZE_VERSION, built into .cache/bin on first use."""
    target = BIN / f"kustomize-{KUSTOMIZE_VERSION}"
    if _kustomize_works(target):
        return target
    with _locked("kustomize"):
        if _kustomize_works(target):  # another run built it while this one waited for the lock
            return target
        go = _go()
        BIN.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="kustomize-build-", dir=CACHE))
        # A private module and build cache, deleted afterwards: only the 30 MB binary stays.
        env = {
            **os.environ,
            "GOBIN": str(work / "bin"),
            "GOPATH": str(work / "gopath"),
            "GOMODCACHE": str(work / "mod"),
            "GOCACHE": str(work / "build"),
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-modcacherw -buildvcs=false",
            "GOWORK": "off",
            "CGO_ENABLED": "0",
        }
        command = [go, "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"]
        print(f"installing kustomize {KUSTOMIZE_VERSION} into {BIN} (go install, once)", file=sys.stderr)
        try:
            try:
                proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                                      timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise ToolError(f"`{' '.join(command)}` did not finish in {INSTALL_TIMEOUT_S} s") from None
            if proc.returncode != 0:
                output = (proc.stderr + proc.stdout).strip().splitlines()
                raise ToolError(
                    f"`{' '.join(command)}` failed (exit {proc.returncode}); it downloads from the Go module "
                    f"proxy (GOPROXY={os.environ.get('GOPROXY', 'default')}):\n" + "\n".join(output[-30:]))
            staged = BIN / f".kustomize-{KUSTOMIZE_VERSION}.{os.getpid()}"
            shutil.copy2(work / "bin" / "kustomize", staged)
            os.replace(staged, target)  # atomic: a concurrent reader sees no binary or the whole one
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not _kustomize_works(target):
            raise ToolError(f"{target} was built but `kustomize version` does not report {KUSTOMIZE_VERSION}")
    return target


def build(directory: Path) -> str:
    """`kustomize build DIRECTORY`; raises ToolError carrying kustomize's own message on failure."""
    proc = subprocess.run([str(kustomize()), "build", str(directory)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise ToolError(f"kustomize build {directory} failed:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def main(argv: list[str]) -> int:
    try:
        if argv == ["kustomize"]:
            print(kustomize())
            return 0
        if len(argv) == 2 and argv[0] == "build":
            sys.stdout.write(build(Path(argv[1])))
            return 0
    except ToolError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
