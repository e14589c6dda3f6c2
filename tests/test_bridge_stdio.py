"""The bridge's own stdin reader: whole lines, however the reads split them."""

from __future__ import annotations

import os
from typing import Any

from claudepeers.bridge import stdio
from claudepeers.bridge.stdio import LineReader


class RecordingReactor:
    """Just enough of a reactor for LineReader: it records what is watched."""

    def __init__(self) -> None:
        self.readers: list[Any] = []

    def addReader(self, reader: Any) -> None:  # noqa: N802 - Twisted's name
        self.readers.append(reader)

    def removeReader(self, reader: Any) -> None:  # noqa: N802
        self.readers.remove(reader)


def test_lines_split_over_reads_come_out_whole_and_in_order() -> None:
    """Lines arrive whole and in order: pending bytes first, blank lines skipped, the rest at EOF."""
    read_fd, write_fd = os.pipe()
    lines: list[bytes] = []
    ended: list[bool] = []
    reader = LineReader(RecordingReactor(), read_fd, lines.append, lambda: ended.append(True),
                        pending=b"zero\none")
    try:
        reader.start()
        assert lines == [b"zero"]
        for chunk in (b" more\n\n  \ntwo\nthr", b"ee", b"\nfour\nfive\n", b"six"):
            os.write(write_fd, chunk)
            reader.doRead()
        assert lines == [b"zero", b"one more", b"two", b"three", b"four", b"five"]
        assert not ended
        reader.connectionLost(None)  # type: ignore[arg-type]
        assert lines[-1] == b"six" and ended == [True]
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_an_endless_line_is_dropped_as_one_unparseable_line(monkeypatch: Any) -> None:
    """A line beyond the limit is thrown away and handed on as malformed, so the SDK answers it."""
    monkeypatch.setattr(stdio, "MAX_LINE_BYTES", 10)
    read_fd, write_fd = os.pipe()
    lines: list[bytes] = []
    reader = LineReader(RecordingReactor(), read_fd, lines.append, lambda: None)
    try:
        reader.start()
        os.write(write_fd, b"x" * 11)
        reader.doRead()
        os.write(write_fd, b"tail\nok\n")
        reader.doRead()
        assert lines == [b"{", b"tail", b"ok"]
    finally:
        os.close(read_fd)
        os.close(write_fd)
