"""``claude-peers send`` refuses what it cannot send, naming why, before it reaches a broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import ROOT
from conftest import broker_env


def send(base: Path, *args: bytes | str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m claudepeers send ARGS`` (arguments may be raw bytes) without a broker."""
    return subprocess.run(
        [sys.executable, "-m", "claudepeers", "send", *args],
        env=broker_env(base), cwd=ROOT, input=stdin, capture_output=True, timeout=60,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


@pytest.mark.parametrize("where", ["argv", "stdin"])
def test_invalid_utf8_is_refused_the_same_from_argv_and_stdin(short_dir: Path, where: str) -> None:
    """The same bytes get the same answer: exit 2 and the offending byte, nothing sent."""
    if where == "argv":
        done = send(short_dir, "bob", b"caf\xe9 ok")
        what = "the message"
    else:
        done = send(short_dir, "bob", "-", stdin=b"caf\xe9 ok")
        what = "the message on stdin"
    assert done.returncode == 2, done.stderr
    assert f"{what} is not valid UTF-8 (byte 0xe9 at offset 3)".encode() in done.stderr
    assert b"UnicodeEncodeError" not in done.stderr and b"Traceback" not in done.stderr


def test_a_message_over_8_mib_and_a_target_over_64_kib_name_the_limit(short_dir: Path) -> None:
    """Not "TooLong: TooLong": what is too long, how long it is, and the limit."""
    done = send(short_dir, "bob", "-", stdin=b"x" * (8 * 1024 * 1024 + 5))
    assert done.returncode == 2
    assert b"the message is 8,388,613 bytes; the wire carries at most 8,388,608 bytes (8 MiB)" in done.stderr
    done = send(short_dir, "b" * 70_000, "hi")
    assert done.returncode == 2
    assert b"the target is 70,000 bytes long; a peer id or name is at most 65,535 bytes" in done.stderr
