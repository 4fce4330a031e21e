"""`make run`'s demo: seed the demo account through the real OAuth path, then the trickle prints
engagements as they land and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.support.procs import MAILSYNC, Proc
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e]


def test_demo_seed_then_trickle_prints_engagements(stack_processes: Stack):
    env = {**stack_processes.env, "MAILSYNC_API_URL": stack_processes.api_url,
           "MAILSYNC_SANDBOX_URL": stack_processes.sandbox_url}
    seeded = subprocess.run([*MAILSYNC, "demo", "seed"], env=env, capture_output=True, text=True, timeout=60)
    assert seeded.returncode == 0, seeded.stderr
    demo = json.loads(seeded.stdout.strip().splitlines()[-1])
    assert demo["account_id"] == "acct-demo" and "/settings/email?session=" in demo["settings_url"]

    trickle = Proc("demo-trickle", [*MAILSYNC, "demo", "trickle"], env)
    try:
        trickle.wait_for_line(r"engagement (inbound|outbound)", timeout=90)
        assert "delivered" in trickle.log_path.read_text()
    finally:
        trickle.popen.send_signal(signal.SIGINT)
        assert trickle.popen.wait(20) == 0
