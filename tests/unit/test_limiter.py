import asyncio
import time

from services.core.adapters.graph.limiter import MailboxLimiter


async def test_at_most_n_in_flight_per_mailbox_and_mailboxes_independent():
    limiter = MailboxLimiter(per_mailbox=2)
    in_flight = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def call(mailbox: str) -> None:
        async with limiter.slot(mailbox):
            in_flight[mailbox] += 1
            peak[mailbox] = max(peak[mailbox], in_flight[mailbox])
            await asyncio.sleep(0.01)
            in_flight[mailbox] -= 1

    await asyncio.gather(*(call(m) for m in ("a", "b") for _ in range(8)))
    assert peak == {"a": 2, "b": 2}


async def test_after_a_429_nothing_is_sent_before_retry_after_and_one_at_a_time():
    limiter = MailboxLimiter(per_mailbox=4, cool_down_s=5)
    limiter.throttled("a", 0.2)
    started = time.monotonic()
    entered: list[float] = []
    concurrent = 0
    peak = 0

    async def call() -> None:
        nonlocal concurrent, peak
        async with limiter.slot("a"):
            entered.append(time.monotonic() - started)
            concurrent += 1
            peak = max(peak, concurrent)
            await asyncio.sleep(0.01)
            concurrent -= 1

    await asyncio.gather(*(call() for _ in range(3)))
    assert min(entered) >= 0.2 and peak == 1


async def test_request_budget_holds_requests_back():
    limiter = MailboxLimiter(per_mailbox=4, budget_per_10min=3)
    for _ in range(3):
        async with limiter.slot("a"):
            pass
    blocked = asyncio.ensure_future(limiter.slot("a").__aenter__())
    done, _ = await asyncio.wait({blocked}, timeout=0.2)
    assert not done  # the fourth request waits for the window
    blocked.cancel()


async def test_a_retry_after_learnt_while_waiting_holds_the_waiting_request_too():
    """A request already waiting out one Retry-After re-checks before it goes: a 429 another request met
    meanwhile moved the gate on (the sandbox counted these as early retries)."""
    limiter = MailboxLimiter(per_mailbox=4, cool_down_s=0)
    limiter.throttled("a", 0.1)
    started = time.monotonic()
    sent_at: list[float] = []

    async def waiting() -> None:
        async with limiter.slot("a"):
            sent_at.append(time.monotonic() - started)

    task = asyncio.ensure_future(waiting())
    await asyncio.sleep(0.05)
    limiter.throttled("a", 0.3)  # another request's 429, while the first waits
    await task
    assert sent_at[0] >= 0.35
