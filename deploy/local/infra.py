"""Kafka + PostgreSQL together: started concurrently, timed, stopped together, data removed."""

from __future__ import annotations

import concurrent.futures
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import procs
from kafka_node import KafkaNode, ensure_jars
from postgres_node import PostgresNode
from procs import ProcRecord, StackError, log


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

    @property
    def env(self) -> dict[str, str]:
        return {"MAILSYNC_KAFKA_BOOTSTRAP": self.kafka.bootstrap, "MAILSYNC_DATABASE_URL": self.pg.url}

    def _start_kafka(self, timeout: float) -> str:
        t0 = time.monotonic()
        fetched = ensure_jars(self.log_dir)
        self.kafka.start()
        self.kafka.wait_ready(timeout)
        total = time.monotonic() - t0
        jars = f"jars fetched {fetched:.1f}s" if fetched is not None else "jars cached"
        return (
            f"kafka ready in {total:.1f}s at {self.kafka.bootstrap} "
            f"({jars}, storage {self.kafka.format_s:.1f}s, broker {total - (fetched or 0) - self.kafka.format_s:.1f}s)"
        )

    def _start_pg(self, timeout: float) -> str:
        t0 = time.monotonic()
        self.pg.start()
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
