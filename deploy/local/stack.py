#!/usr/bin/env python3
"""The local mailsync stack: real Kafka + PostgreSQL, the Microsoft 365 sandbox and the services.

    stack.py infra-exec [--keep-logs DIR] -- CMD ARGS...  Kafka + PostgreSQL around one command (make test)
    stack.py up      the whole stack, detached; returns when ready; writes .mailsync/stack.json
    stack.py down    stops whatever `up` started; idempotent
    stack.py run     `up` in the foreground + `mailsync demo trickle`; Ctrl-C stops everything

Stdlib only; run it with the project's venv python (the services come from its `mailsync` script).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import procs
from infra import Infra, Interrupts, sweep_stale_runs
from procs import CACHE, REPO, Proc, ProcRecord, StackError, free_ports, http_status, log, spawn, tail

STATE = REPO / ".mailsync"
PIDS = STATE / "pids.json"
STACK_JSON = STATE / "stack.json"
SECRETS = STATE / "secrets.json"
ENV_FILE = STATE / "env"
LOGS = STATE / "logs"
CLIENT_ID = "4f3c2a1e-9b7d-4c5e-8a6f-0d1e2f3a4b5c"  # the sandbox's app registration for the local stack
SERVICES = ("subscriber", "matcher", "renewer")


def run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def mailsync_bin() -> str:
    here = Path(sys.executable).parent / "mailsync"
    found = str(here) if here.exists() else shutil.which("mailsync")
    if not found:
        raise StackError("the `mailsync` console script is not installed: run `make venv` first")
    return found


# ---------------------------------------------------------------- infra-exec


def cmd_infra_exec(args: argparse.Namespace) -> int:
    cmd: list[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        log("infra-exec: nothing to run (usage: stack.py infra-exec -- CMD ARGS...)")
        return 2
    interrupts = Interrupts()
    interrupts.install()
    procs.become_subreaper()
    sweep_stale_runs(referenced=read_state().get("dirs", []))
    rid = run_id()
    run_dir = CACHE / "run" / rid
    infra = Infra(run_dir, run_dir / "logs")
    rc = 1
    failed_infra = False
    try:
        infra.start(args.timeout)
        if interrupts:
            rc = 130
        else:
            env = {**os.environ, **infra.env, **no_proxy(os.environ)}
            log(f"running: {' '.join(cmd)}")
            try:
                child = subprocess.Popen(cmd, env=env)
            except OSError as exc:
                raise StackError(f"cannot run {cmd[0]}: {exc}") from None
            infra.track(child, "command")
            rc = interrupts.wait_child(child)
    except StackError as exc:
        if interrupts:
            rc = 130
        else:
            failed_infra = True
            log(f"FAILED: {exc}")
    finally:
        orphans = procs.kill_orphans(exclude=infra.pids())
        if orphans:
            log(f"stopped {len(orphans)} process(es) the command left running: {orphans}")
        survivors = infra.stop()
        if survivors:
            log(f"still running after stop: {survivors}")
            rc = rc or 1
        if args.keep_logs:
            infra.keep_logs(Path(args.keep_logs))
        if (rc != 0 and not interrupts) or failed_infra:
            dest = CACHE / "logs" / rid
            infra.keep_logs(dest)
            log(f"broker and database logs kept in {dest.relative_to(REPO)}")
            for name in ("kafka.log", "postgres.log"):
                if failed_infra:
                    log(f"last lines of {name}:\n{tail(dest / name, 25)}")
                elif os.environ.get("CI"):
                    log(f"warnings and errors in {name}:\n{procs.problems(dest / name)}")
        shutil.rmtree(run_dir, ignore_errors=True)
    return rc


def no_proxy(env: Mapping[str, str]) -> dict[str, str]:
    """Never send loopback traffic through a proxy the CI machine may set."""
    current = env.get("NO_PROXY") or env.get("no_proxy") or ""
    value = ",".join(x for x in (current, "127.0.0.1", "localhost") if x)
    return {"NO_PROXY": value, "no_proxy": value}


# ---------------------------------------------------------------- up


def load_secrets() -> dict[str, str]:
    """Per-stack secrets, generated once and kept (mode 600) so up/down/run and scripts agree."""
    try:
        data: dict[str, str] = json.loads(SECRETS.read_text())
        if {"client_secret", "token_keys", "api_token", "session_secret", "db_password"} <= data.keys():
            return data
    except (OSError, ValueError):
        pass
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    data = {
        "client_id": CLIENT_ID,
        "client_secret": secrets.token_urlsafe(32),
        "token_keys": f"local{secrets.token_hex(3)}:{key}",
        "api_token": secrets.token_urlsafe(32),
        "session_secret": secrets.token_urlsafe(48),
        "db_password": secrets.token_hex(16),
    }
    with procs.open_private(SECRETS) as f:
        json.dump(data, f, indent=2)
    return data


def read_state() -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(PIDS.read_text())
        return state
    except (OSError, ValueError):
        return {"procs": [], "dirs": []}


def write_state(state: dict[str, Any]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    tmp = PIDS.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(PIDS)


TLS_DIR = STATE / "tls"  # the local CA (made once) and the certificates it signs


def service_env(infra: Infra, sec: dict[str, str], sandbox: str, api: str, public: str,
                tls: Mapping[str, tuple[Path, Path]], https_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}
    env.update(no_proxy(os.environ))
    env.update(infra.env)
    env.update(
        {
            "MAILSYNC_GRAPH_URL": f"{sandbox}/v1.0",
            "MAILSYNC_LOGIN_URL": sandbox,
            "MAILSYNC_CLIENT_ID": sec["client_id"],
            "MAILSYNC_CLIENT_SECRET": sec["client_secret"],
            "MAILSYNC_PUBLIC_URL": public,  # Graph calls the subscriber's HTTPS listener
            "MAILSYNC_APP_URL": api,  # pages and API: plain HTTP on loopback, for a browser without setup
            "MAILSYNC_CA_FILE": str(tls["ca"][0]),
            "MAILSYNC_TLS_CERT_FILE": str(tls["subscriber"][0]),
            "MAILSYNC_TLS_KEY_FILE": str(tls["subscriber"][1]),
            "MAILSYNC_HTTPS_PORT": str(https_port),
            "MAILSYNC_SANDBOX_TLS_CERT": str(tls["sandbox"][0]),
            "MAILSYNC_SANDBOX_TLS_KEY": str(tls["sandbox"][1]),
            "MAILSYNC_TOKEN_KEYS": sec["token_keys"],
            "MAILSYNC_API_TOKEN": sec["api_token"],
            "MAILSYNC_SESSION_SECRET": sec["session_secret"],
            "MAILSYNC_HTTP_HOST": "127.0.0.1",
            "MAILSYNC_LOG_LEVEL": "INFO",
            # for `mailsync demo ...` and scripts: where the sandbox's control API and the service API are
            "MAILSYNC_SANDBOX_URL": sandbox,
            "MAILSYNC_API_URL": api,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def register_certificate(url: str, pem: str, ca_file: str) -> None:
    """POST the app certificate to the sandbox, verifying it against the local CA (never without)."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_file)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, data=json.dumps({"pem": pem}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=10) as resp:
        if resp.status >= 300:
            raise StackError(f"the sandbox refused the app certificate ({resp.status})")


def running_records() -> list[ProcRecord]:
    return [r for r in (ProcRecord.from_json(d) for d in read_state()["procs"]) if r.members()]


def up(timeout: float) -> dict[str, Any]:
    """Start everything detached and return the stack description (also written to stack.json)."""
    live = running_records()
    if live:
        if STACK_JSON.exists() and len(live) == len(read_state()["procs"]):
            log("the stack is already up (.mailsync/stack.json); `make down` stops it")
            stack: dict[str, Any] = json.loads(STACK_JSON.read_text())
            return stack
        raise StackError(f"a previous stack is partly running ({', '.join(r.name for r in live)}): run `make down`")
    down(quiet=True)
    sweep_stale_runs()
    shutil.rmtree(LOGS, ignore_errors=True)
    sec = load_secrets()
    bin_ = mailsync_bin()
    t0 = time.monotonic()
    infra = Infra(CACHE / "run" / run_id(), LOGS, sec["db_password"])
    started: list[Proc] = []

    def record() -> None:  # after every start, so `down` can always clean up what exists
        recs = infra.records() + [p.record for p in started]
        write_state({"procs": [r.to_json() for r in recs], "dirs": infra.data_dirs()})

    try:
        infra.start(timeout)
    finally:
        record()

    from mailsync_sandbox.local_ca import local_tls  # the venv's: `make up` runs this with it

    tls = local_tls(TLS_DIR, "sandbox", "subscriber")
    from mailsync_sandbox.app_certificate import certificate_pem, ensure_app_certificate

    # The tenant-wide connection's credential: an app certificate signed by the local CA, registered with the
    # sandbox's app once it serves (as one uploads it to the app registration in Entra).
    app_cert = ensure_app_certificate(TLS_DIR, *tls["ca"], sec["client_id"])
    sandbox_port, https_port, *ports = free_ports(2 + len(SERVICES))
    sandbox = f"https://127.0.0.1:{sandbox_port}"
    api = f"http://127.0.0.1:{ports[0]}"
    public = f"https://127.0.0.1:{https_port}"
    ca_file = str(tls["ca"][0])
    env = service_env(infra, sec, sandbox, api, public, tls, https_port)
    env["MAILSYNC_APP_CERT_FILE"] = str(app_cert)
    write_env_file(env)

    t1 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(procs.run_logged, f"mailsync {c}", [bin_, c], LOGS / f"{c}.log", env)
            for c in ("migrate", "topics")
        ]
        for job in jobs:
            job.result()
    log(f"migrations and topics done in {time.monotonic() - t1:.1f}s")

    t1 = time.monotonic()
    argv = [bin_, "sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)]
    started.append(spawn("sandbox", argv, LOGS / "sandbox.log", env, cwd=REPO))
    record()
    checks = [f"{sandbox}/sandbox/stats"]
    for name, port in zip(SERVICES, ports, strict=True):
        started.append(
            spawn(name, [bin_, name], LOGS / f"{name}.log", {**env, "MAILSYNC_HTTP_PORT": str(port)}, cwd=REPO)
        )
        record()
        checks.append(f"http://127.0.0.1:{port}/readyz")
    for p, url in zip(started, checks, strict=True):
        # the sandbox has no /readyz contract: any HTTP answer means it serves; services must say 200
        want_200 = p.name != "sandbox"

        def ready(url: str = url, want_200: bool = want_200) -> bool:
            status = http_status(url, ca_file=ca_file)
            return status is not None and (status == 200 if want_200 else status < 500)

        procs.wait_until(f"{p.name} ({url})", ready, timeout, alive=p.dead_reason)
        log(f"{p.name} ready ({time.monotonic() - t1:.1f}s after start)")
        if p.name == "sandbox":
            register_certificate(f"{sandbox}/sandbox/apps/{sec['client_id']}/certificates",
                                 certificate_pem(app_cert), ca_file)

    seed_out = procs.run_logged("mailsync demo seed", [bin_, "demo", "seed"], LOGS / "seed.log", env, capture=True)
    demo = parse_seed(seed_out)
    stack = {
        "api": api,
        "api_token": sec["api_token"],
        "sandbox": sandbox,
        "public_url": public,
        "ca_file": ca_file,
        "ca_key_file": str(tls["ca"][1]),
        "kafka": infra.kafka.bootstrap,
        "database_url": infra.pg.url,
        "session_secret": sec["session_secret"],
        "demo": demo,
        "services": {name: f"http://127.0.0.1:{port}" for name, port in zip(SERVICES, ports, strict=True)},
        "logs": str(LOGS),
    }
    with procs.open_private(STACK_JSON) as f:
        json.dump(stack, f, indent=2)
    log(f"stack up in {time.monotonic() - t0:.1f}s; wrote {STACK_JSON.relative_to(REPO)}")
    return stack


def parse_seed(out: str) -> dict[str, Any]:
    for line in reversed(out.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and {"account_id", "user_id", "settings_url"} <= value.keys():
            return value
    raise StackError(
        f"mailsync demo seed: no JSON line with account_id, user_id, settings_url in its output: {out[-500:]!r}"
    )


def write_env_file(env: dict[str, str]) -> None:
    with procs.open_private(ENV_FILE) as f:
        f.write("# source me: the environment the local stack's services run with\n")
        for key in sorted(k for k in env if k.startswith("MAILSYNC_")):
            f.write(f"export {key}='{env[key]}'\n")


def cmd_up(args: argparse.Namespace) -> int:
    interrupts = Interrupts()
    interrupts.install()
    try:
        stack = up(args.timeout)
    except StackError as exc:
        log(f"FAILED: {exc}")
        log(f"logs: {LOGS.relative_to(REPO)}/; stopping what was started")
        down()
        return 1
    print_urls(stack)
    return 0


def print_urls(stack: dict[str, Any]) -> None:
    demo = stack.get("demo", {})
    print(
        "\nmailsync is up:\n"
        f"  API        {stack['api']}   (Authorization: Bearer <api_token from .mailsync/stack.json>)\n"
        f"  Settings   {demo.get('settings_url', '-')}\n"
        f"  Sandbox    {stack['sandbox']}   (Microsoft 365 stand-in)\n"
        f"  Graph-facing {stack['public_url']}   (HTTPS; local CA: {stack['ca_file']})\n"
        f"  Kafka      {stack['kafka']}\n"
        f"  Database   {stack['database_url']}\n"
        f"  Logs       {LOGS.relative_to(REPO)}/   env: source {ENV_FILE.relative_to(REPO)}\n",
        flush=True,
    )


# ---------------------------------------------------------------- down


def down(quiet: bool = False) -> int:
    state = read_state()
    records = [ProcRecord.from_json(d) for d in state.get("procs", [])]
    infra_names = {"kafka", "postgres"}
    services = [r for r in records if r.name not in infra_names]
    infra = [r for r in records if r.name in infra_names]
    live = [r.name for r in records if r.members()]
    if live:
        log(f"stopping {', '.join(live)}")
    t0 = time.monotonic()
    survivors = procs.stop_all(services) + procs.stop_all(infra)
    for d in state.get("dirs", []):
        shutil.rmtree(d, ignore_errors=True)
    if survivors:
        log(f"FAILED to stop: {survivors}")
        return 1
    for f in (PIDS, STACK_JSON):
        f.unlink(missing_ok=True)
    if live:
        log(f"stopped in {time.monotonic() - t0:.1f}s; nothing left running")
    elif not quiet:
        log("nothing was running")
    return 0


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    interrupts = Interrupts()
    interrupts.install()
    procs.become_subreaper()
    rc = 0
    try:
        stack = up(args.timeout)
        print_urls(stack)
        if not interrupts:
            print("Mail is flowing (mailsync demo trickle). Ctrl-C stops everything.\n", flush=True)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}, **read_env_file()}
            child = subprocess.Popen([mailsync_bin(), "demo", "trickle"], env=env)
            rc = interrupts.wait_child(child)
            if interrupts:
                rc = 0
            else:
                log(f"mailsync demo trickle exited with code {rc}; stopping the stack")
    except StackError as exc:
        log(f"FAILED: {exc}")
        log(f"logs: {LOGS.relative_to(REPO)}/")
        rc = 1
    finally:
        procs.kill_orphans(exclude={r.pid for r in running_records()})
        rc = down() or rc
    return rc


def read_env_file() -> dict[str, str]:
    env = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'")
    return {**env, **no_proxy(os.environ), "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "infra-exec", help="start Kafka + PostgreSQL, run CMD with MAILSYNC_KAFKA_BOOTSTRAP/DATABASE_URL, stop"
    )
    p.add_argument("--keep-logs", metavar="DIR", help="copy the broker and database logs here afterwards")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds each component may take to be ready")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    for name in ("up", "run"):
        p = sub.add_parser(name)
        p.add_argument("--timeout", type=float, default=180.0, help="seconds each component may take to be ready")
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "infra-exec":
        return cmd_infra_exec(args)
    if args.command == "up":
        return cmd_up(args)
    if args.command == "run":
        return cmd_run(args)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # let `down` finish
    return down()


if __name__ == "__main__":
    sys.exit(main())
