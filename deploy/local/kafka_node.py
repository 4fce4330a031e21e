"""A real Apache Kafka 4.x broker (single combined KRaft node), assembled from Maven Central.

See docs/kafka-local.md. The jars are fetched once into .cache/kafka/libs (git-ignored) by
`mvn dependency:copy-dependencies` from deploy/local/kafka/pom.xml; every start gets a fresh data
directory and free loopback ports. Ready means: the log says `Kafka Server started` and a Metadata
request over the Kafka protocol lists the broker.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from procs import (
    CACHE,
    REPO,
    Proc,
    StackError,
    apt_install,
    file_contains,
    file_size,
    free_ports,
    log,
    run_logged,
    spawn,
    wait_until,
)

KAFKA_DIR = REPO / "deploy" / "local" / "kafka"
POM = KAFKA_DIR / "pom.xml"
LIBS = CACHE / "kafka" / "libs"
STAMP = LIBS / ".complete"
READY_LINE = "Kafka Server started"


# ---------------------------------------------------------------- jars


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_ready() -> bool:
    try:
        return STAMP.read_text().strip() == _pom_digest()
    except OSError:
        return False


def ensure_jars(log_dir: Path) -> float | None:
    """Fetch the broker's jars if absent or stale (pom.xml changed). Returns seconds spent, or None if cached."""
    if jars_ready():
        return None
    missing = [pkg for tool, pkg in (("java", "openjdk-17-jre-headless"), ("mvn", "maven")) if not shutil.which(tool)]
    if missing:
        apt_install(missing, log_dir, "kafka: needs Java 17+ and Maven to fetch and run the broker")
    with _lock(CACHE / "kafka" / ".lock"):
        if jars_ready():  # another run fetched them while we waited
            return None
        start = time.monotonic()
        log(f"kafka: fetching the broker jars from Maven Central into {LIBS.relative_to(REPO)} (once) ...")
        tmp = LIBS.with_name(f"libs.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        run_logged(
            "kafka: mvn dependency:copy-dependencies",
            ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"],
            log_dir / "mvn.log",
            timeout=900,
        )
        if not any(tmp.glob("kafka_2.13-*.jar")):
            raise StackError(f"kafka: mvn finished but no kafka_2.13 jar in {tmp}; see {log_dir / 'mvn.log'}")
        (tmp / ".complete").write_text(_pom_digest() + "\n")
        shutil.rmtree(LIBS, ignore_errors=True)
        tmp.rename(LIBS)
        took = time.monotonic() - start
        log(f"kafka: jars fetched in {took:.1f}s")
        return took


# ---------------------------------------------------------------- config


def render(template: Path, values: Mapping[str, str]) -> str:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise StackError(f"{template}: unfilled placeholder near {text[text.index('{{') :][:40]!r}")
    return text


def cluster_id() -> str:
    """A Kafka cluster id (base64url of a random UUID, like `kafka-storage random-uuid`), no JVM needed."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# ---------------------------------------------------------------- Kafka protocol probe


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def _call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"mailsync-stack"
    msg = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv(sock, 4))
    data = _recv(sock, size)
    (got,) = struct.unpack(">i", data[:4])
    if got != corr:
        raise ConnectionError(f"correlation id {got} != {corr}")
    return data[4:]


def probe_metadata(port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """ApiVersions then Metadata (no topics) over the wire; returns the brokers (node_id, host, port)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        resp = _call(sock, 18, 0, 1, b"")  # ApiVersions v0
        err, count = struct.unpack(">hi", resp[:6])
        if err != 0:
            raise ConnectionError(f"ApiVersions error {err}")
        ranges = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(3, (0, -1))
        version = min(hi, 8)  # v9+ are "flexible" (compact encoding); 1..8 share one simple layout
        if version < max(lo, 1):
            raise ConnectionError(f"no usable Metadata version in {lo}..{hi}")
        body = struct.pack(">i", 0)  # empty topic list: brokers only
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation
        if version >= 8:
            body += b"\x00\x00"  # include cluster/topic authorized operations
        resp = _call(sock, 3, version, 2, body)
    off = 4 if version >= 3 else 0  # throttle_time_ms
    (n,) = struct.unpack(">i", resp[off : off + 4])
    off += 4
    brokers = []
    for _ in range(n):
        node_id, hlen = struct.unpack(">ih", resp[off : off + 6])
        host = resp[off + 6 : off + 6 + hlen].decode()
        off += 6 + hlen
        (bport, rlen) = struct.unpack(">ih", resp[off : off + 6])
        off += 6 + max(rlen, 0)
        brokers.append((node_id, host, bport))
    return brokers


def _metadata_ok(port: int) -> bool:
    try:
        return len(probe_metadata(port)) > 0
    except (OSError, ConnectionError, struct.error):
        return False


# ---------------------------------------------------------------- the node


class KafkaNode:
    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.data_dir = run_dir / "kafka-data"
        self.conf_dir = run_dir / "kafka-config"
        self.log_path = log_dir / "kafka.log"
        self.port, self.controller_port = free_ports(2)
        self.proc: Proc | None = None
        self.format_s = 0.0
        self._log_offset = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str, heap: str) -> list[str]:
        return [
            "java",
            *heap.split(),
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.run_dir / 'kafka-logs'}",
            f"-Dlog4j2.configurationFile={self.conf_dir / 'log4j2.properties'}",
            "-cp",
            f"{LIBS}/*",
            *args,
        ]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        props = self.conf_dir / "server.properties"
        props.write_text(
            render(
                KAFKA_DIR / "server.properties.tmpl",
                {"port": str(self.port), "controller_port": str(self.controller_port), "data_dir": str(self.data_dir)},
            )
        )
        (self.conf_dir / "log4j2.properties").write_text(
            render(KAFKA_DIR / "log4j2.properties.tmpl", {"level": os.environ.get("MAILSYNC_KAFKA_LOG_LEVEL", "INFO")})
        )
        t0 = time.monotonic()
        if not (self.data_dir / "meta.properties").exists():  # a restart keeps the data (same ports too)
            shutil.rmtree(self.data_dir)
            shutil.copytree(self._formatted_template(), self.data_dir)
        self.format_s = time.monotonic() - t0
        heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m")
        self._log_offset = file_size(self.log_path)
        self.proc = spawn(
            "kafka",
            self._java("kafka.Kafka", str(props), heap=f"{heap} -XX:+UseG1GC -XX:MaxGCPauseMillis=20"),
            self.log_path,
            {**os.environ, "LC_ALL": "C.UTF-8"},
            cwd=self.run_dir,
            grace=30.0,
        )

    def _formatted_template(self) -> Path:
        """A freshly formatted, never started data directory, made once per jars + config template.

        `kafka-storage format` costs a JVM start (~1s); its output (meta.properties with cluster id and
        node id, bootstrap.checkpoint with the metadata version) depends on neither ports nor paths, so
        each run copies this template into its own fresh data directory instead.
        """
        digest = hashlib.sha256(
            (STAMP.read_text() + (KAFKA_DIR / "server.properties.tmpl").read_text()).encode()
        ).hexdigest()[:16]
        template = CACHE / "kafka" / f"formatted-{digest}"
        if (template / "meta.properties").exists():
            return template
        with _lock(CACHE / "kafka" / ".lock"):
            if (template / "meta.properties").exists():
                return template
            for old in (CACHE / "kafka").glob("formatted-*"):
                shutil.rmtree(old, ignore_errors=True)
            tmp = template.with_name(f"{template.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            props = self.conf_dir / "format.properties"
            props.write_text(
                render(
                    KAFKA_DIR / "server.properties.tmpl",
                    {"port": str(self.port), "controller_port": str(self.controller_port), "data_dir": str(tmp)},
                )
            )
            run_logged(
                "kafka: format storage",
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(props),
                    heap="-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto",
                ),
                self.log_path,
                timeout=120,
            )  # fmt: skip
            tmp.rename(template)
        return template

    def wait_ready(self, timeout: float) -> float:
        assert self.proc is not None
        proc = self.proc
        return wait_until(
            "kafka",
            lambda: file_contains(self.log_path, READY_LINE, self._log_offset) and _metadata_ok(self.port),
            timeout,
            alive=proc.dead_reason,
        )
