"""A hung broker no longer hangs the agents: real bridges against a broker stopped by SIGSTOP."""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

import pytest

from bridge_support import asyncio_test, open_bridge, text_of
from conftest import BrokerProcess

pytestmark = pytest.mark.slow  # two bridges, a broker, and deadlines of a second


@asyncio_test
async def test_a_stopped_broker_costs_a_call_its_deadline_and_the_retried_send_is_stored_once(
    make_agent: Callable, broker_process: BrokerProcess
) -> None:
    """With the broker SIGSTOPped, whoami and send_message answer isError within the deadline;
    once it runs again, the same send repeated is stored and shown exactly once."""
    assert broker_process.process is not None
    broker_pid = broker_process.process.pid
    deadline = {"CLAUDE_PEERS_CALL_TIMEOUT_SECONDS": "1"}
    sender, recipient = make_agent("alpha", "claude"), make_agent("beta", "codex")
    async with open_bridge(recipient, "codex-mcp-client") as beta, open_bridge(sender, env=deadline) as alpha:
        beta_id = (await beta.text("whoami")).split("ID: ")[1].split("\n")[0]
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            result = await alpha.call("whoami")
            assert time.monotonic() - started < 3.0
            assert result.is_error and "did not answer within 1 s" in text_of(result)
            result = await alpha.call("send_message", {"to_id": beta_id, "message": "once only"})
            assert result.is_error and "same to_id and message is safe" in text_of(result)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        again = await alpha.text("send_message", {"to_id": beta_id, "message": "once only"})
        assert "once only" not in again  # the answer names the message, not its text
        shown = await beta.text("check_messages")
        assert shown.startswith("1 new message:") and shown.count("once only") == 1, shown
        assert await beta.text("check_messages") == "No new messages."
