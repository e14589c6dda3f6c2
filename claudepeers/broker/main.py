"""Run the broker in the foreground without twistd: ``claude-peers broker``.

This is what autostarting clients, launchd and systemd run. It logs to stderr (or
CLAUDE_PEERS_LOG), stops cleanly on SIGTERM/SIGINT (the reactor's handlers run the
service's stopService), and exits 1 with a clear line when the broker cannot start.
"""

from __future__ import annotations

import gc
import sys
from typing import Sequence

#: Allocations between two young collections (Python's default is 700). Every message in
#: flight holds a few Deferreds, dicts and records that survive a young collection, so at
#: the default the collector walked them again and again: 11% of the broker's CPU under
#: load (0.70 s of 6.4 s in bench/broker_bench.py), 4.5% at this threshold.
YOUNG_THRESHOLD = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, start the service, run the reactor; the exit status says if it worked."""
    from twisted.logger import FilteringLogObserver, PredicateResult, globalLogBeginner, textFileLogObserver
    from twisted.python import usage

    from claudepeers.broker.service import Options, accept_failure, makeService

    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as exc:
        print(f"claude-peers broker: {exc}", file=sys.stderr)
        return 2
    settings = options["settings"]
    log_file = open(settings.log_path, "a", buffering=1) if settings.log_path else sys.stderr
    # redirectStandardIO=False: a broker started by a client must not grab its stdio.
    # Twisted's per-connection accept failures are replaced by one throttled warning.
    quieter = FilteringLogObserver(
        textFileLogObserver(log_file),
        [lambda event: PredicateResult.no if accept_failure(event) else PredicateResult.maybe],
    )
    globalLogBeginner.beginLoggingTo([quieter], redirectStandardIO=False)

    from twisted.internet import reactor

    # main() returns the exit status itself: the service need not end the process (service.py).
    root = makeService(options, reactor, exits_itself=False)
    broker_service = next(iter(root))
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    tune_collector()
    reactor.run()
    return 1 if broker_service.failed else 0


def tune_collector() -> None:
    """Collect young objects less often, and never walk the modules imported at start again
    (frozen: they live as long as the process). Reference cycles are still collected."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


if __name__ == "__main__":
    sys.exit(main())
