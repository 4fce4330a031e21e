"""A real PostgreSQL server from Debian's `postgresql` package, in a fresh throwaway data directory.

initdb into a temp dir, loopback TCP on a free port, durability traded for speed (tests only),
a `mailsync` database owned by a `mailsync` login role with a password. PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` system user with its data under /tmp.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from procs import Proc, StackError, apt_install, free_ports, run_logged, spawn, wait_until

PG_GLOB = "/usr/lib/postgresql/*/bin/initdb"

# Speed over durability: every data directory is thrown away after the run.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


def _bindirs() -> list[Path]:
    found = [Path(p).parent for p in Path("/").glob(PG_GLOB.lstrip("/"))]

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    return sorted(found, key=version, reverse=True)


def ensure_postgres(log_dir: Path) -> Path:
    """The newest /usr/lib/postgresql/*/bin; installs Debian's `postgresql` package when root."""
    dirs = _bindirs()
    if dirs:
        return dirs[0]
    if os.geteuid() == 0:
        # Don't let the package create and start its own `main` cluster: we only need the binaries.
        dropin = Path("/etc/postgresql-common/createcluster.d/00-mailsync-no-main-cluster.conf")
        dropin.parent.mkdir(parents=True, exist_ok=True)
        if not dropin.exists():
            dropin.write_text("create_main_cluster = false\n")
    apt_install(["postgresql"], log_dir, f"postgres: no server binaries ({PG_GLOB})")
    dirs = _bindirs()
    if not dirs:
        raise StackError(f"postgres: installed the package but found no {PG_GLOB}")
    return dirs[0]


def _run_as() -> str | None:
    """The OS user to run initdb/postgres as: `postgres` when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "postgres: running as root but there is no `postgres` system user to run the server as"
        ) from None
    return "postgres"


class PostgresNode:
    def __init__(self, log_dir: Path, password: str) -> None:
        self.log_dir = log_dir
        self.log_path = log_dir / "postgres.log"
        self.password = password
        (self.port,) = free_ports(1)
        self.user = _run_as()
        self.base: Path | None = None
        self.proc: Proc | None = None
        self.bindir: Path | None = None
        self.initdb_s = 0.0
        self._argv: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://mailsync:{self.password}@127.0.0.1:{self.port}/mailsync"

    def start(self) -> None:
        self.bindir = ensure_postgres(self.log_dir)
        # /tmp, not the checkout: the postgres user may not be able to traverse the checkout's parents.
        self.base = Path(tempfile.mkdtemp(prefix="mailsync-pg-"))
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        data = self.base / "data"
        t0 = time.monotonic()
        run_logged(
            "postgres: initdb",
            [str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-locale",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions"],
            self.log_path,
            {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
            user=self.user,
            timeout=120,
        )  # fmt: skip
        self.initdb_s = time.monotonic() - t0
        settings = {**SERVER_SETTINGS, "port": str(self.port), "unix_socket_directories": str(self.base)}
        argv = [str(self.bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._argv = argv
        self._spawn()

    def _spawn(self) -> None:
        assert self.base is not None
        argv = self._argv
        self.proc = spawn(
            "postgres",
            argv,
            self.log_path,
            {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
            cwd=self.base,
            user=self.user,
            stop_signal=2,  # SIGINT = "fast" shutdown: don't wait for clients to disconnect
            grace=15.0,
        )

    def _accepting(self) -> bool:
        assert self.bindir is not None
        return (
            subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            ).returncode
            == 0
        )

    def wait_ready(self, timeout: float) -> float:
        assert self.proc is not None and self.bindir is not None and self.base is not None
        waited = wait_until("postgres", self._accepting, timeout, interval=0.05, alive=self.proc.dead_reason)
        psql = str(self.bindir / "psql")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        admin = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.base), "-p", str(self.port), "-U", "postgres"]
        run_logged(
            "postgres: create role and database",
            [psql, *admin, "-d", "postgres",
             "-c", f"CREATE ROLE mailsync LOGIN CREATEDB PASSWORD '{self.password}'",
             "-c", "CREATE DATABASE mailsync OWNER mailsync"],
            self.log_path,
            env,
            timeout=60,
        )  # fmt: skip
        # The real proof: the URL the services get works over TCP with the password.
        run_logged(
            "postgres: connect as mailsync",
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c", "SELECT 1"],
            self.log_path,
            env,
            timeout=60,
        )
        return waited

    def restart(self, timeout: float = 60.0) -> None:
        """Fast shutdown and start again on the same data and port (chaos tests)."""
        assert self.proc is not None
        self.proc.popen.send_signal(2)
        self.proc.popen.wait(timeout)
        self._spawn()
        wait_until("postgres", self._accepting, timeout, interval=0.05, alive=self.proc.dead_reason)

    def remove_data(self) -> None:
        if self.base is not None:
            remove_tree(self.base)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
