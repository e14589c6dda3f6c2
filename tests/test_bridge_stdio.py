"""The bridge's own stdin reader: whole lines, however the reads split them."""

from __future__ import annotations

import os
from typing import Any

from claudepeers.bridge import stdio
from claudepeers.bridge.stdio import LineReader, LineWriter


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


def test_an_endless_line_is_refused_once_and_skipped_to_its_end(monkeypatch: Any) -> None:
    """A line beyond the limit is reported once and thrown away up to its newline; the next
    line is read as usual (also when the too-long line comes whole in one read)."""
    monkeypatch.setattr(stdio, "MAX_LINE_BYTES", 10)
    read_fd, write_fd = os.pipe()
    lines: list[bytes] = []
    refused: list[bool] = []
    reader = LineReader(RecordingReactor(), read_fd, lines.append, lambda: None,
                        on_too_long=lambda: refused.append(True))
    try:
        reader.start()
        os.write(write_fd, b"x" * 11)
        reader.doRead()
        os.write(write_fd, b"x" * 5)
        reader.doRead()
        os.write(write_fd, b"tail\nok\n" + b"y" * 12 + b"\nlast\n")
        reader.doRead()
        assert lines == [b"ok", b"last"]
        assert refused == [True, True]
    finally:
        os.close(read_fd)
        os.close(write_fd)


class TurnReactor(RecordingReactor):
    """Records callLater(0) calls so that a test can end the "reactor turn" itself."""

    def __init__(self) -> None:
        super().__init__()
        self.later: list[Any] = []
        self.writers: list[Any] = []

    def callLater(self, delay: float, function: Any, *args: Any) -> None:  # noqa: N802
        self.later.append((function, args))

    def end_turn(self) -> None:
        calls, self.later = self.later, []
        for function, args in calls:
            function(*args)

    def addWriter(self, writer: Any) -> None:  # noqa: N802
        self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:  # noqa: N802
        self.writers.remove(writer)


def test_lines_written_soon_go_out_together_at_the_end_of_the_turn_in_order() -> None:
    """write_soon holds lines until the turn ends (one write), and a plain write keeps the order."""
    read_fd, write_fd = os.pipe()
    reactor = TurnReactor()
    writer = LineWriter(reactor, write_fd)
    os.set_blocking(read_fd, False)
    try:
        writer.write_soon(b"1\n")
        writer.write_soon(b"2\n")
        assert writer.pending == 4 and len(reactor.later) == 1
        try:
            assert os.read(read_fd, 100) == b""
        except BlockingIOError:
            pass
        reactor.end_turn()
        assert os.read(read_fd, 100) == b"1\n2\n" and writer.pending == 0
        writer.write_soon(b"3\n")
        assert writer.write(b"4\n") is True  # the held line goes first
        reactor.end_turn()
        assert os.read(read_fd, 100) == b"3\n4\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_long_line_in_small_reads_costs_linear_time() -> None:
    """5 MB of one line in 4 KiB reads (a slow writer) is joined once at its end, not copied per read."""
    import time

    lines: list[bytes] = []
    reader = LineReader(RecordingReactor(), os.open(os.devnull, os.O_RDONLY), lines.append, lambda: None)
    chunk = b"z" * 4096
    started = time.process_time()
    for _ in range(1280):
        reader._data(chunk)
    reader._data(b"\n")
    took = time.process_time() - started
    assert len(lines) == 1 and len(lines[0]) == 1280 * 4096
    assert took < 0.3, f"{took:.2f} s of CPU for one 5 MB line"
