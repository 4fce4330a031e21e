"""Process plumbing for the local stack: ports, spawning, readiness waits, stopping, leftovers.

Stdlib only. Every long-lived process is started in its own session (so a Ctrl-C aimed at the
terminal's foreground group does not reach it) and stopped by us, leader first, then its whole
process group, with a SIGKILL fallback after a deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"

# Set by the signal handler (SIGINT/SIGTERM/SIGHUP): every wait gives up promptly.
CANCEL = threading.Event()


def log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


class StackError(Exception):
    """A part of the stack failed; the message names it (and carries the tail of its log)."""


# ---------------------------------------------------------------- ports, waits, logs


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together while picking, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.1,
    alive: Callable[[], str | None] | None = None,
) -> float:
    """Poll `check` until it returns True; returns seconds waited.

    `alive` returns a reason string when the thing being waited for has died (fail fast).
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if CANCEL.is_set():
            raise StackError(f"{what}: interrupted")
        if check():
            return time.monotonic() - start
        if alive is not None:
            dead = alive()
            if dead:
                raise StackError(f"{what}: {dead}")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    out = data.splitlines()[-lines:]
    return "\n".join(f"    | {line}" for line in out) if out else f"(log {path} is empty)"


def problems(path: Path, lines: int = 20) -> str:
    """The last warnings and errors of a log (a shutdown's tail says nothing about a failure earlier)."""
    words = (" WARN ", " ERROR ", " FATAL ", "WARNING:", "ERROR:", "FATAL:", "PANIC:")
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    found = [line for line in text.splitlines() if any(w in line for w in words)][-lines:]
    return "\n".join(f"    | {line}" for line in found) if found else "    (no warnings or errors)"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def file_contains(path: Path, needle: str, offset: int = 0) -> bool:
    """Whether `needle` appears in the file after byte `offset` (a restart appends to the same log)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()
    except OSError:
        return False


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0, ca_file: str | None = None) -> int | None:
    """HTTP status of a GET (any status, including 4xx/5xx), or None when nothing answered. HTTPS is verified
    against the system's CAs plus `ca_file` (the local stack's CA)."""
    opener = _NO_PROXY
    if ca_file:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=ca_file)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, starttime) from /proc/<pid>/stat, or None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[2] == pgid and st[0] != "Z":
            out.append(pid)
    return out


def descendants(root: int) -> list[int]:
    """Live descendants of `root` (PostgreSQL's backends setsid() into their own groups, so groups miss them)."""
    tree: dict[int, list[int]] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[0] != "Z":
            tree.setdefault(st[1], []).append(pid)
    out: list[int] = []
    todo = [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def children_of(ppid: int) -> list[int]:
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[1] == ppid:
            out.append(pid)
    return out


@dataclass
class ProcRecord:
    """What `down` needs to find and stop a detached process, safely against pid reuse."""

    name: str
    pid: int
    starttime: int
    log: str
    stop_signal: int = int(signal.SIGTERM)
    grace: float = 15.0
    signal_tree: bool = False  # send the stop signal to every descendant too (not a group leader)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProcRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def leader_alive(self) -> bool:
        st = proc_stat(self.pid)
        return st is not None and st[3] == self.starttime and st[0] != "Z"

    def members(self) -> list[int]:
        """Live processes of this record: its process group (pgid == leader pid, new session) and,
        while the leader lives, all its descendants."""
        if not self.ours():
            return []
        found = set(group_members(self.pid))
        if self.leader_alive():
            found |= {self.pid, *descendants(self.pid)}
        return sorted(found)

    def ours(self) -> bool:
        """True while the pid still designates our process (or its group lingers on)."""
        st = proc_stat(self.pid)
        if st is None or st[0] == "Z":
            # leader gone: the group may still have members (pgid stays the same number)
            return True
        return st[3] == self.starttime


class Proc:
    """A process we started, in its own session; `record` lets another invocation stop it."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path, record: ProcRecord) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.record = record

    def dead_reason(self) -> str | None:
        rc = self.popen.poll()
        if rc is None:
            return None
        return f"process exited with code {rc}; last lines of {self.log_path}:\n{tail(self.log_path)}"


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
    grace: float = 15.0,
) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    st = proc_stat(popen.pid)
    rec = ProcRecord(
        name=name,
        pid=popen.pid,
        starttime=st[3] if st else 0,
        log=str(log_path),
        stop_signal=int(stop_signal),
        grace=grace,
    )
    return Proc(name, popen, log_path, rec)


def run_logged(
    what: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    user: str | None = None,
    timeout: float = 120.0,
    capture: bool = False,
) -> str:
    """Run a short command to completion, output appended to log_path; StackError on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else out,
                stderr=out,
                env=dict(env) if env is not None else None,
                timeout=timeout,
                check=False,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"{what}: timed out after {timeout:.0f}s; log {log_path}:\n{tail(log_path)}") from None
        except OSError as exc:
            raise StackError(f"{what}: cannot run {argv[0]}: {exc}") from None
    stdout = proc.stdout.decode("utf-8", "replace") if capture and proc.stdout else ""
    if capture and stdout:
        with log_path.open("ab") as out:
            out.write(proc.stdout)
    if proc.returncode != 0:
        raise StackError(f"{what}: exited with code {proc.returncode}; log {log_path}:\n{tail(log_path)}")
    return stdout


_APT = threading.Lock()


def apt_install(packages: Sequence[str], log_dir: Path, why: str) -> None:
    """Install Debian packages (root only); StackError naming `why` otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{why}; install as root: apt-get install -y {' '.join(packages)}")
    with _APT:
        _apt_install(packages, log_dir, why)


def _apt_install(packages: Sequence[str], log_dir: Path, why: str) -> None:
    start = time.monotonic()
    log(f"{why}: installing {' '.join(packages)} (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_logged("apt-get update", ["apt-get", "update"], log_dir / "apt.log", env, timeout=600)
    run_logged(
        f"apt-get install {' '.join(packages)}",
        ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", *packages],
        log_dir / "apt.log",
        env,
        timeout=900,
    )
    log(f"installed {' '.join(packages)} in {time.monotonic() - start:.1f}s")


def stop_all(records: Sequence[ProcRecord], popens: Iterable[subprocess.Popen[bytes]] = ()) -> list[str]:
    """Stop these processes together: stop signal to each leader, wait up to its grace, then SIGKILL
    its group and every descendant seen at the start. Returns descriptions of anything that survived."""
    popen_list = list(popens)

    def reap() -> None:
        for p in popen_list:
            p.poll()

    live = [r for r in records if r.ours()]
    # Descendants may be reparented away once their parent exits: remember them (with start times).
    seen: dict[int, list[tuple[int, int]]] = {
        r.pid: [(pid, st[3]) for pid in r.members() if (st := proc_stat(pid)) is not None] for r in live
    }

    def remaining(r: ProcRecord) -> list[int]:
        left = set(r.members())
        for pid, started in seen[r.pid]:
            st = proc_stat(pid)
            if st is not None and st[3] == started and st[0] != "Z":
                left.add(pid)
        return sorted(left)

    def send(pids: Iterable[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    for r in live:
        if r.signal_tree:
            send(remaining(r), r.stop_signal)
        elif r.leader_alive():
            send([r.pid], r.stop_signal)
        else:  # leader already gone: ask the rest politely
            send(remaining(r), signal.SIGTERM)
    start = time.monotonic()
    give_up = start + max((r.grace for r in live), default=0.0) + 10.0
    killed: set[int] = set()
    pending = list(live)
    while pending and time.monotonic() < give_up:
        reap()
        pending = [r for r in pending if remaining(r)]
        now = time.monotonic()
        for r in pending:
            if r.pid not in killed and now - start > r.grace:
                log(f"{r.name} did not stop within {r.grace:.0f}s; SIGKILL to its processes")
                send(remaining(r), signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(r.pid, signal.SIGKILL)
                killed.add(r.pid)
        if pending:
            time.sleep(0.05)
    reap()
    survivors = []
    for r in live:
        left = remaining(r)
        if left:
            survivors.append(f"{r.name}: pids {left}")
    return survivors


# ---------------------------------------------------------------- orphans (infra-exec)

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants (daemons a test forgot) reparent to us, so we can clean them up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def kill_orphans(exclude: set[int], grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every child of ours not in `exclude`; reap them. Returns the pids."""
    me = os.getpid()
    seen: list[int] = []
    for _ in range(10):  # killing one orphan may orphan its own children onto us
        kids = [p for p in children_of(me) if p not in exclude]
        if not kids:
            break
        live = [p for p in kids if (st := proc_stat(p)) is not None and st[0] != "Z"]
        seen.extend(live)
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap_any(kids)
            if not [p for p in kids if proc_stat(p) is not None]:
                break
            time.sleep(0.05)
        for p in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        _reap_any(kids, block=True)
    return seen


def _reap_any(pids: Iterable[int], block: bool = False) -> None:
    for p in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, 0 if block else os.WNOHANG)


def open_private(path: Path, mode: str = "w") -> IO[str]:
    """Open a file readable by its owner only (secrets, stack.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)
