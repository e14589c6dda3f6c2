"""Following the Codex TUI that shows our thread, so the thread's peer ends when the person leaves.

The shared app-server keeps a thread loaded (and its MCP servers, this bridge among them)
for a while after its TUI exits, and a ``codex queue`` into it would start a turn nobody
sees. Once :func:`.codexproc.host_of` names the one TUI showing the thread (``exact``), we
watch that process; when it exits we ask again (another TUI may have resumed the thread
meanwhile) and follow the new one, or else call ``on_left``: the bridge stops, and the
broker marks the peer gone. A later resume starts a new MCP server, hence a new bridge
(seen with Codex 0.169: the daemon restarts a thread's session when a TUI resumes it).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from claudepeers.bridge import agentwatch, codexproc
from claudepeers.common import agents


class TuiWatch:
    """Whether a person still looks at our thread, and what to do when none does."""

    log = Logger()

    def __init__(self, reactor: Any, in_thread: Callable[..., Any], agent: agents.AgentProcess, thread_id: str,
                 host: codexproc.CodexHost, on_left: Callable[[], None],
                 lookup: Callable[[agents.AgentProcess, str], codexproc.CodexHost | None] = codexproc.host_of) -> None:
        self._reactor = reactor
        self._in_thread = in_thread
        self._agent = agent
        self._thread_id = thread_id
        self.host = host
        self._on_left = on_left
        self._lookup = lookup
        self._watch: Any = None
        self.left = False

    @property
    def follows(self) -> bool:
        """True when we know the one TUI of our thread in a shared app-server (so we watch it)."""
        return self.host.exact and self._agent.subcommand == "app-server"

    def present(self) -> bool:
        """True while the TUI showing our thread runs (or, not knowing which, any TUI of the home)."""
        return not self.left and self.host.person_present()

    def start(self) -> None:
        """Begin watching (on the reactor thread)."""
        if not self.follows:
            return
        if not self.host.tuis:
            self._gone()
            return
        pid, start = self.host.tuis[0]
        self.log.info("following Codex TUI {pid} for thread {thread}", pid=pid, thread=self._thread_id)
        self._watch = agentwatch.watch_exit(self._reactor, pid, start, self._exited)

    def stop(self) -> None:
        """Stop watching."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _exited(self) -> None:
        self._watch = None
        d = self._in_thread(self._lookup, self._agent, self._thread_id)
        d.addCallbacks(self._rechecked, lambda failure: self._rechecked(None))

    def _rechecked(self, host: codexproc.CodexHost | None) -> None:
        if host is not None and host.exact and host.tuis and host.person_present():
            self.host = host
            self.start()  # resumed in another TUI: follow that one
            return
        self._gone()

    def _gone(self) -> None:
        if self.left:
            return
        self.left = True
        self.log.info("the Codex TUI that showed thread {thread} has exited", thread=self._thread_id)
        self._on_left()
