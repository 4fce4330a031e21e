"""Kafka + PostgreSQL together: started concurrently, timed, stopped together, data removed."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Collection
from pathlib import Path

import procs
from kafka_node import KafkaNode, ensure_jars
from postgres_node import PostgresNode
from procs import CACHE, ProcRecord, StackError, log

RUNS = CACHE / "run"


class Interrupts:
    """SIGINT/SIGTERM/SIGHUP become a flag (checked by the waits) instead of an exception mid-cleanup."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.first_at = 0.0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if not self.received:
            self.first_at = time.monotonic()
            log(f"got {signal.Signals(signum).name}: stopping")
        self.received.append(signum)
        procs.CANCEL.set()

    def __bool__(self) -> bool:
        return bool(self.received)

    def wait_child(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for an attached (same process group) child; pass termination on, escalate if it lingers.

        SIGINT from the terminal already reached the child (same foreground group), so we give it time;
        SIGTERM/SIGHUP (CI cancelling the job) are forwarded as SIGTERM right away.
        """
        terminated = killed = False
        while True:
            try:
                rc = child.wait(timeout=0.2)
                return 128 - rc if rc < 0 else rc
            except subprocess.TimeoutExpired:
                pass
            if not self.received:
                continue
            waited = time.monotonic() - self.first_at
            polite = any(s != signal.SIGINT for s in self.received) or waited > 10
            if polite and not terminated:
                child.terminate()
                terminated = True
            if waited > 30 and not killed:
                log("command did not exit 30s after the signal: SIGKILL")
                child.kill()
                killed = True


class Infra:
    def __init__(self, run_dir: Path, log_dir: Path, db_password: str | None = None) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.kafka = KafkaNode(run_dir, log_dir)
        self.pg = PostgresNode(log_dir, db_password or secrets.token_hex(16))
        self._lock = threading.Lock()
        self._tracked: list[ProcRecord] = []
        self._save()

    def track(self, popen: subprocess.Popen[bytes], name: str) -> None:
        """Note a process we run under this infra (the command), for the stale-run sweep only."""
        st = procs.proc_stat(popen.pid)
        self._tracked.append(
            ProcRecord(name=name, pid=popen.pid, starttime=st[3] if st else 0, log="", signal_tree=True)
        )
        self._save()

    def _save(self) -> None:
        """run_dir/procs.json: lets a later run clean up after us if this launcher is killed (-9)."""
        me = procs.proc_stat(os.getpid())
        with self._lock:
            (self.run_dir / "procs.json").write_text(
                json.dumps(
                    {
                        "owner_pid": os.getpid(),
                        "owner_starttime": me[3] if me else 0,
                        "procs": [r.to_json() for r in self._tracked + self.records()],
                        "dirs": self.data_dirs(),
                    }
                )
            )

    @property
    def env(self) -> dict[str, str]:
        return {"MAILSYNC_KAFKA_BOOTSTRAP": self.kafka.bootstrap, "MAILSYNC_DATABASE_URL": self.pg.url}

    def _start_kafka(self, timeout: float) -> str:
        t0 = time.monotonic()
        fetched = ensure_jars(self.log_dir)
        self.kafka.start()
        self._save()
        self.kafka.wait_ready(timeout)
        total = time.monotonic() - t0
        jars = f"jars fetched {fetched:.1f}s" if fetched is not None else "jars cached"
        return (
            f"kafka ready in {total:.1f}s at {self.kafka.bootstrap} "
            f"({jars}, storage {self.kafka.format_s:.1f}s, broker {total - (fetched or 0) - self.kafka.format_s:.1f}s)"
        )

    def _start_pg(self, timeout: float) -> str:
        t0 = time.monotonic()
        try:
            self.pg.start()
        finally:
            self._save()
        self.pg.wait_ready(timeout)
        return (
            f"postgres ready in {time.monotonic() - t0:.1f}s at 127.0.0.1:{self.pg.port} "
            f"(initdb {self.pg.initdb_s:.1f}s)"
        )

    def start(self, timeout: float) -> None:
        """Start both concurrently; raise StackError naming whichever failed (both are stopped by `stop`)."""
        t0 = time.monotonic()
        errors: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(self._start_kafka, timeout), pool.submit(self._start_pg, timeout)]
            for fut in futures:
                try:
                    log(fut.result())
                except StackError as exc:
                    errors.append(str(exc))
                except Exception as exc:  # a bug: still report it and clean up
                    errors.append(f"{type(exc).__name__}: {exc}")
        if errors:
            raise StackError("\n".join(errors))
        log(f"infra ready in {time.monotonic() - t0:.1f}s")

    def records(self) -> list[ProcRecord]:
        return [p.record for p in (self.kafka.proc, self.pg.proc) if p is not None]

    def pids(self) -> set[int]:
        return {r.pid for r in self.records()}

    def data_dirs(self) -> list[str]:
        return [str(self.run_dir)] + ([str(self.pg.base)] if self.pg.base else [])

    def stop(self) -> list[str]:
        t0 = time.monotonic()
        popens = [p.popen for p in (self.kafka.proc, self.pg.proc) if p is not None]
        survivors = procs.stop_all(self.records(), popens)
        self.pg.remove_data()
        if self.records():
            log(f"infra stopped in {time.monotonic() - t0:.1f}s")
        return survivors

    def keep_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for f in self.log_dir.glob("*.log"):
            shutil.copy2(f, dest / f.name)


def sweep_stale_runs(referenced: Collection[str] = ()) -> None:
    """Stop and delete what earlier runs left behind when their launcher was killed (-9, OOM, lost CI runner).

    A run directory is stale when its launcher is gone and `.mailsync/pids.json` (a detached `up`) does not
    list it. Runs of live launchers (parallel `make test`s) are left alone.
    """
    if not RUNS.is_dir():
        return
    for run_dir in sorted(RUNS.iterdir()):
        if not run_dir.is_dir() or str(run_dir) in referenced:
            continue
        try:
            data = json.loads((run_dir / "procs.json").read_text())
            owner, owner_start = int(data["owner_pid"]), int(data["owner_starttime"])
        except (OSError, ValueError, KeyError, TypeError):
            data, owner, owner_start = {}, _pid_from_name(run_dir.name), None
        st = procs.proc_stat(owner) if owner else None
        if st is not None and st[0] != "Z" and owner_start in (None, st[3]):
            continue  # its launcher still runs
        records = [ProcRecord.from_json(d) for d in data.get("procs", [])]
        live = [r.name for r in records if r.members()]
        survivors = procs.stop_all(records)
        for d in [*data.get("dirs", []), str(run_dir)]:
            shutil.rmtree(d, ignore_errors=True)
        if live:
            log(f"cleaned up stale run {run_dir.name} (its launcher died): stopped {', '.join(live)}")
        if survivors:
            log(f"could not stop leftovers of {run_dir.name}: {survivors}")


def _pid_from_name(name: str) -> int:
    with contextlib.suppress(ValueError, IndexError):
        return int(name.rsplit("-", 1)[1])
    return 0
