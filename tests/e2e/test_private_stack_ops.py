"""Operations that would disturb the shared stack, on a private one (its own Kafka and PostgreSQL):
`mailsync rotate-keys` (rewrites every stored token) and `/readyz` while PostgreSQL is down."""

from __future__ import annotations

import asyncio
import base64
import importlib
import secrets
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from services.core.adapters.config import parse_token_keys
from services.core.adapters.crypto import TokenBox, TokenDecryptError
from tests.support.kafka_tail import Tail
from tests.support.private_infra import PrivateInfra, private_stack
from tests.support.procs import MAILSYNC, ROOT, Proc
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

SERVICES = ("subscriber", "matcher", "renewer")
launcher_procs = importlib.import_module("procs")  # deploy/local/procs.py, on sys.path via private_infra


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def private() -> AsyncIterator[tuple[Stack, PrivateInfra]]:
    async with private_stack("ops-") as (stack, infra):
        yield stack, infra


def restart_services(stack: Stack, **env: str) -> None:
    """Roll the three services onto a changed environment (same ports, so Graph's URLs stay valid)."""
    for name in SERVICES:
        assert stack.procs[name].stop() == 0, name
    stack.env.update(env)
    for name in SERVICES:
        port = stack.ports[name]
        proc = stack.procs[name] = Proc(f"ops-{name}-rolled", [*MAILSYNC, name],
                                        {**stack.env, "MAILSYNC_HTTP_PORT": str(port)})
        proc.wait_http_ok(f"http://127.0.0.1:{port}/readyz")


async def mailsync(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*MAILSYNC, *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def token_rows(stack: Stack) -> list[Any]:
    assert stack.pool is not None
    return await stack.pool.fetch("SELECT connection_id::text AS cid, access_token_enc, refresh_token_enc"
                                  " FROM mailbox_connections WHERE access_token_enc IS NOT NULL"
                                  " OR refresh_token_enc IS NOT NULL ORDER BY connection_id")


def opened(box: TokenBox, rows: list[Any]) -> dict[str, tuple[str | None, str | None]]:
    return {r["cid"]: tuple(box.decrypt(bytes(b), bound_to=r["cid"]) if b is not None else None  # type: ignore[misc]
                            for b in (r["access_token_enc"], r["refresh_token_enc"])) for r in rows}


async def test_rotate_keys_reencrypts_every_token_and_the_old_key_can_be_dropped(private):
    stack, _infra = private
    account = stack.new_account()
    contact = await stack.add_contact(account, "rotation@client.example")
    await stack.wait_contact(contact)
    boxes = [await stack.new_mailbox(account) for _ in range(3)]
    old_keys = stack.env["MAILSYNC_TOKEN_KEYS"]
    old_box = TokenBox(parse_token_keys(old_keys))
    new_key = "k2:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    new_box = TokenBox(parse_token_keys(new_key))

    before = await token_rows(stack)
    assert len(before) >= 3 and all(bytes(r["refresh_token_enc"]).startswith(b"v1.k1.") for r in before)
    plaintexts = opened(old_box, before)  # the old key reads them today

    # docs/deploy.md, step 1: every service learns the new key (first, so new tokens use it) and keeps
    # the old one, *before* anything is re-encrypted; a replica without k2 could not read rotated tokens.
    await asyncio.to_thread(restart_services, stack, MAILSYNC_TOKEN_KEYS=f"{new_key},{old_keys}")
    # Step 2: re-encrypt. The new key first, the old one after it (it still decrypts).
    code, out, err = await mailsync({**stack.env, "MAILSYNC_TOKEN_KEYS": f"{new_key},{old_keys}"}, "rotate-keys")
    assert code == 0, err
    assert out.strip() == f"re-encrypted the tokens of {len(before)} connection(s) with key 'k2'"

    after = await token_rows(stack)
    assert [r["cid"] for r in after] == [r["cid"] for r in before]
    for row in after:
        for blob in (row["access_token_enc"], row["refresh_token_enc"]):
            assert blob is None or bytes(blob).startswith(b"v1.k2.")
    assert opened(new_box, after) == plaintexts  # the same tokens, readable with the new key alone
    with pytest.raises(TokenDecryptError):
        opened(old_box, after)  # ...and no longer with the old one
    code, out, _ = await mailsync({**stack.env, "MAILSYNC_TOKEN_KEYS": f"{new_key},{old_keys}"}, "rotate-keys")
    assert code == 0 and "tokens of 0 connection(s)" in out  # nothing left to do

    # Drop the old key: every service still reads every mailbox.
    await asyncio.to_thread(restart_services, stack, MAILSYNC_TOKEN_KEYS=new_key)
    tail = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.engagements.v1").start()
    try:
        imids = [await stack.deliver(box, **{"from": "rotation@client.example"}) for box in boxes]
        for box in boxes:  # push, or the poll if Graph holds push back after the restart: both need the new key
            status, _ = await stack.api("POST", f"/api/v1/connections/{box.connection_id}/sync")
            assert status == 202
        for imid in imids:  # the matcher decrypted each mailbox's token with the new key
            # 90 s: the restarted matcher rejoins its consumer group first (slow on a loaded host).
            event = await tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=90)
            assert event["contact_ids"] == [contact]
    finally:
        await tail.stop()
    assert stack.pool is not None
    polled = await stack.pool.fetchval("SELECT last_polled_at FROM mailbox_connections WHERE connection_id = $1::uuid",
                                       boxes[0].connection_id)
    status, _ = await stack.api("POST", f"/api/v1/connections/{boxes[0].connection_id}/sync")
    assert status == 202
    await wait_until(lambda: stack.pool.fetchval(  # type: ignore[union-attr]
        "SELECT last_polled_at > $2 FROM mailbox_connections WHERE connection_id = $1::uuid",
        boxes[0].connection_id, polled), timeout=30, what="a renewer poll with the new key")
    for box in boxes:
        status, view = await stack.api("GET", f"/api/v1/users/{box.user_id}/connection")
        assert status == 200 and view["status"] == "connected", view


async def readiness(stack: Stack) -> dict[str, tuple[int, dict[str, Any]]]:
    assert stack.http is not None
    out = {}
    for name in SERVICES:
        async with stack.http.get(f"http://127.0.0.1:{stack.ports[name]}/readyz") as resp:
            out[name] = (resp.status, await resp.json())
    return out


async def test_readyz_is_not_ready_while_postgresql_is_down_and_ready_again_after(private):
    stack, infra = private
    node = infra.postgres

    async def all_ready() -> bool:
        return all(status == 200 for status, _ in (await readiness(stack)).values())

    await wait_until(all_ready, what="every service ready")  # positive control first
    node.proc.popen.send_signal(signal.SIGINT)  # fast shutdown: PostgreSQL is down
    await asyncio.to_thread(node.proc.popen.wait, 30)
    try:
        async def all_unready() -> dict[str, tuple[int, dict[str, Any]]] | None:
            answers = await readiness(stack)
            return answers if all(status == 503 for status, _ in answers.values()) else None

        answers = await wait_until(all_unready, timeout=30, what="every /readyz answering 503")
        for name, (_, body) in answers.items():
            assert body["checks"] == {"kafka": True, "postgresql": False}, (name, body)
            assert stack.procs[name].popen.poll() is None, f"{name} exited while PostgreSQL was down"
    finally:
        await asyncio.to_thread(_start_again, node)
    await wait_until(all_ready, timeout=40, what="every service ready again")
    # And ready means working: mail flows end to end again.
    account = stack.new_account()
    contact = await stack.add_contact(account, "after.outage@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, **{"from": "after.outage@client.example"})
    await stack.wait_row("SELECT 1 FROM engagements WHERE account_id = $1 AND internet_message_id = $2", account, imid,
                         what="an engagement after the outage", timeout=40)


def _start_again(node: Any) -> None:
    """Same data directory and port (the launcher's own spawn), then wait until it accepts connections."""
    node._spawn()
    launcher_procs.wait_until("postgres after the outage", node._accepting, 60, interval=0.05,
                              alive=node.proc.dead_reason)
