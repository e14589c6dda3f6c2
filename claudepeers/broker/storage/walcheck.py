"""Reading a WAL file before SQLite recovers it: did recovery throw committed frames away?

SQLite's recovery keeps the longest prefix of frames whose salts match the WAL header and
whose running checksum is right, up to its last commit frame, and silently drops the rest
(sqlite.org, "WAL-mode file format"). A byte flipped in the middle of the WAL therefore
loses every transaction after it without a word. This module repeats that walk, so the
broker can say at start how many committed transactions recovery is about to drop, and
keep a copy of the damaged WAL for the operator.

Layout (all header fields big-endian): the 32-byte header is magic (0x377f0682: checksum
words little-endian, 0x377f0683: big-endian), format 3007000, page size, checkpoint
sequence, salt-1, salt-2, checksum-1, checksum-2 (over the first 24 bytes). Each frame is
a 24-byte header (page number, database size in pages for a commit frame else 0, salt-1,
salt-2, checksum-1, checksum-2 over the frame header's first 8 bytes and the page, chained
from the previous frame) followed by the page.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

_MAGIC = 0x377F0682
_HEADER = 32
_FRAME_HEADER = 24
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class WalReport:
    """What a WAL holds and what recovery will keep of it."""

    wal_bytes: int
    frames: int  # whole frames in the file
    kept_frames: int  # the valid prefix recovery applies (to its last commit frame)
    kept_commits: int
    discarded_commits: int  # commit frames of the current generation that recovery drops
    reason: str  # why the walk stopped ("" when nothing of the current generation was lost)

    @property
    def damaged(self) -> bool:
        """True when recovery drops committed transactions (or the whole WAL)."""
        return self.discarded_commits > 0

    def describe(self) -> str:
        """One sentence for the log, ``status`` and ``doctor``."""
        return (
            f"the write-ahead log held {self.frames} frames; recovery keeps {self.kept_frames} "
            f"({self.kept_commits} transactions) and discards {self.discarded_commits} committed "
            f"transaction(s) after them: {self.reason}"
        )


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    # SQLite's walChecksumBytes: two running 32-bit sums over pairs of words.
    for index in range(0, len(words), 2):
        s0 = (s0 + words[index] + s1) & _MASK
        s1 = (s1 + words[index + 1] + s0) & _MASK
    return s0, s1


def inspect_wal(wal_path: Path) -> WalReport | None:
    """Walk the WAL at ``wal_path`` as recovery will; None when there is no WAL or no frame."""
    try:
        data = Path(wal_path).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _HEADER:
        return None
    magic, version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:_HEADER])
    frame_size = _FRAME_HEADER + page_size if page_size else 0
    frames = (len(data) - _HEADER) // frame_size if 512 <= page_size <= 65536 else 0
    big_endian = magic & 1 == 1
    if magic & ~1 != _MAGIC or version != 3007000 or not frames:
        if frames:
            return WalReport(len(data), frames, 0, 0, frames, "its header is not a valid WAL header")
        return None
    if _checksum(data[:24], big_endian, 0, 0) != (c0, c1):
        commits = sum(1 for i in range(frames) if _frame(data, i, frame_size)[1])
        return WalReport(len(data), frames, 0, 0, max(commits, 1), "the WAL header's checksum is wrong")
    s0, s1 = c0, c1
    kept = kept_commits = valid = 0
    reason = ""
    for index in range(frames):
        start = _HEADER + index * frame_size
        _page, commit, f_salt1, f_salt2, f0, f1 = _frame(data, index, frame_size)
        if (f_salt1, f_salt2) != (salt1, salt2):
            reason = f"frame {index + 1} belongs to an earlier generation of the WAL"
            break
        s0, s1 = _checksum(data[start : start + 8] + data[start + _FRAME_HEADER : start + frame_size], big_endian, s0, s1)
        if (s0, s1) != (f0, f1):
            reason = f"frame {index + 1} (byte {start}) fails its checksum"
            break
        valid += 1
        if commit:
            kept, kept_commits = valid, kept_commits + 1
    else:
        return WalReport(len(data), frames, kept, kept_commits, 0, "")
    # Frames after the break that carry this generation's salts were written after the ones
    # kept: their commit frames are transactions SQLite acknowledged and recovery drops.
    lost = sum(
        1
        for later in range(valid, frames)
        if _frame(data, later, frame_size)[2:4] == (salt1, salt2) and _frame(data, later, frame_size)[1]
    )
    return WalReport(len(data), frames, kept, kept_commits, lost, reason if lost else "")


def _frame(data: bytes, index: int, frame_size: int) -> tuple[int, int, int, int, int, int]:
    start = _HEADER + index * frame_size
    return struct.unpack(">6I", data[start : start + _FRAME_HEADER])


def keep_copy(wal_path: Path) -> Path:
    """Copy the damaged WAL beside it (0600, never overwriting) before SQLite touches it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = wal_path.with_name(f"{wal_path.name}.damaged-{stamp}")
    suffix = 0
    while target.exists():
        suffix += 1
        target = wal_path.with_name(f"{wal_path.name}.damaged-{stamp}.{suffix}")
    with open(wal_path, "rb") as source:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out)
    os.chmod(target, 0o600)
    return target
