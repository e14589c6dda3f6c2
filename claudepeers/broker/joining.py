"""A broker on a PostgreSQL database joins the network of hosts that share it (DESIGN 7).

The service calls :func:`join` after making the Broker and before starting it (the broker
then loads only its own host's peers), and :func:`Joined.start` once the broker has
started; :func:`Joined.stop` before the store closes. Alone on SQLite nothing here runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import inlineCallbacks

from claudepeers import __version__
from claudepeers.broker.crosshost import Network
from claudepeers.broker.hosts import HEARTBEAT_SECONDS, HostRegistration
from claudepeers.broker.remotekill import RemoteKills


def connector(dsn: str) -> Callable[..., Any]:
    """How the host's own connections are made: autocommit, libpq's options as the store's."""

    def connect(_dsn: str, application_name: str) -> Any:
        from claudepeers.broker.storage import pgdatabase, pgnet

        # Keepalives and a user timeout on both sides (pgnet.py): a partition fails the
        # heartbeat within seconds instead of hanging this host's connection, and the
        # server soon lets go of the host's lock that connection held.
        options = {k: v for k, v in pgnet.client_options(dsn).items() if k != "application_name"}
        connection = pgdatabase.connect(dsn, autocommit=True, application_name=application_name, **options)
        pgnet.bound_server_side(connection)
        return connection

    return connect


def heartbeat_seconds(environ: Any = None) -> float:
    """CLAUDE_PEERS_HEARTBEAT_SECONDS (default 2): how often a host beats; three missed beats
    make it unreachable to the others."""
    environ = os.environ if environ is None else environ
    text = environ.get("CLAUDE_PEERS_HEARTBEAT_SECONDS")
    if not text:
        return HEARTBEAT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.05 <= value <= 3600:
        raise ValueError(f"CLAUDE_PEERS_HEARTBEAT_SECONDS must be a number of seconds from 0.05 to 3600, not {text!r}")
    return value


@dataclass
class Joined:
    """This host's registration and its view of the network."""

    registration: HostRegistration
    network: Network

    def start(self) -> Any:
        """Read the other hosts' peers and listen (after the broker has started)."""
        return self.network.start()

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop listening and beating; closing the lock's connection releases the host name."""
        yield self.network.stop()
        yield self.registration.stop()


@inlineCallbacks
def join(broker: Any, dsn: str, reactor: Any, address: str, on_lost_host: Callable[[str], Any]) -> Any:
    """Take the host's lock (HostTaken naming the holder if another broker has it) and attach
    the network to ``broker``; fires with a :class:`Joined`."""
    connect = connector(dsn)
    registration = HostRegistration(dsn, broker.host, __version__, reactor, address=address, connect=connect,
                                    on_lost_host=on_lost_host, heartbeat=heartbeat_seconds())
    yield registration.start()
    def listener(channels: list[str], on_notice: Callable[[str, str], Any], on_connected: Callable[[], Any],
                 on_lost: Callable[[str], Any]) -> Any:
        from claudepeers.broker.storage.listener import Listener

        return Listener(dsn, channels, on_notice, on_connect=on_connected, on_lost=on_lost, reactor=reactor)

    network = Network(broker, registration, listener)
    broker.network = network
    broker.remote_kills = RemoteKills(broker, registration)
    return Joined(registration, network)
