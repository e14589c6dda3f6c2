"""How a bridge process ends: always, promptly, whatever its agent did to its pipes.

The bridge must never outlive its agent (DESIGN 1). Found hanging (issue 10 item 5): a
bridge whose stderr was closed raised on its way out, skipped ``os._exit`` and sat in the
interpreter's shutdown joining an idle (non-daemon) worker of its thread pool, while
Twisted's SIGTERM handler, which the asyncio reactor never uninstalls, swallowed every
SIGTERM. And a stderr pipe nobody reads blocked the reactor thread in a log write. So:

- :func:`ensure_standard_fds` gives a closed stdin, stdout or stderr ``/dev/null``, so that
  nothing later opens a socket as fd 2 and nothing fails for want of it;
- :func:`leave` is the one way out (``os._exit``), after a flush that cannot raise;
- :func:`arm_exit_deadline` makes the end certain once it has begun: a second SIGTERM or
  SIGINT kills at once, and a daemon timer exits if anything still hangs;
- :class:`StderrSink` writes log lines only when stderr can take them without blocking
  (a full or broken stderr drops lines, it never stops the bridge);
- the bridge runs blocking work in daemon threads (``processes.DaemonThreadPool``), watches
  its parent as well as its agent, and notices a closed stdout with nothing to write
  (:mod:`.agentwatch`).

Only the standard library here: the entry point imports this before the handshake.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from typing import NoReturn

#: Once the bridge has begun to stop, it is gone within this many seconds, whatever hangs.
EXIT_DEADLINE_SECONDS = 1.5
#: A pipe takes a write of up to PIPE_BUF bytes whole once poll() says it is writable.
_PIPE_BUF = 4096


def ensure_standard_fds() -> None:
    """Open ``/dev/null`` on whichever of fds 0, 1, 2 is closed (an agent may close them)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:  # fd 2 was closed when the interpreter started
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115


def arm_exit_deadline(code: int = 0, seconds: float = EXIT_DEADLINE_SECONDS) -> None:
    """From now on the process ends: on a second signal at once, else within ``seconds``."""
    for number in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(number, signal.SIG_DFL)
        except ValueError:  # not the main thread (tests call this from elsewhere)
            pass
    timer = threading.Timer(seconds, os._exit, (code,))
    timer.daemon = True
    timer.start()


def leave(code: int) -> NoReturn:
    """Exit now with ``code``: flush what stderr can take, never wait for a thread."""
    arm_exit_deadline(code)
    stream = sys.stderr
    try:
        if stream is not None:
            stream.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


class StderrSink:
    """A bytes file for the log observer that never blocks: full or broken stderr drops lines.

    No O_NONBLOCK on fd 2: its file description may be shared with other processes the
    agent started. Instead each piece of at most PIPE_BUF bytes is written only when
    poll() says the descriptor can take it at once.
    """

    encoding = "utf-8"  # FileLogObserver writes text to a file that has an encoding

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self.dropped = 0

    def write(self, data: str | bytes) -> None:
        """Write ``data`` if stderr takes it without waiting; else count it as dropped."""
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        view = memoryview(data)
        while view:
            if not self._writable():
                self.dropped += 1
                return
            try:
                written = os.write(self._fd, view[:_PIPE_BUF])
            except OSError:
                self.dropped += 1
                return
            view = view[written:]

    def flush(self) -> None:
        """Nothing is buffered here."""

    def _writable(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        for _fd, events in poller.poll(0):
            if events & select.POLLOUT and not events & (select.POLLERR | select.POLLNVAL):
                return True
        return False
