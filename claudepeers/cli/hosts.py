"""The hosts of a network of brokers sharing one PostgreSQL database, for ``status`` and
``doctor`` (DESIGN 7): name, heartbeat age, peers, reachable or not, and how this broker
reaches the database. Plain functions of the status dict; nothing here talks to a broker.
"""

from __future__ import annotations

from typing import Any, Mapping

from claudepeers.cli.findings import Finding


def format_hosts(status: Mapping[str, Any]) -> list[str]:
    """Lines for ``status``: the network's state, then one line per host (none when alone)."""
    hosts = status.get("hosts")
    if not isinstance(hosts, list):
        return []
    network = status.get("network") or {}
    lines = [f"  network:  database {network.get('database', '?')}; notifications {network.get('notifications', '?')}"]
    lines.append(f"Hosts: {len(hosts)} ({sum(1 for h in hosts if h.get('reachable'))} reachable)")
    for host in hosts:
        name = str(host.get("host", "?")) + (" (this host)" if host.get("self") else "")
        peers = int(host.get("peers") or 0)
        reach = ("reachable" if host.get("reachable") else "stopped (its broker was shut down)" if host.get("stopped")
                 else "UNREACHABLE (its broker's heartbeat stopped)")
        lines.append(f"  {name:<24} heartbeat {float(host.get('heartbeat_age') or 0):.1f} s ago  "
                     f"{peers} peer{'s' if peers != 1 else ''}  {reach}  [{host.get('address', '?')}]")
    return lines


def check_hosts(status: Any) -> list[Finding]:
    """Doctor findings: this broker's reach of the database, and hosts that cannot be heard."""
    if not isinstance(status, dict) or not isinstance(status.get("hosts"), list):
        return []
    network = status.get("network") or {}
    database = str(network.get("database", "?"))
    findings = []
    if database == "connected" and str(network.get("notifications", "")).startswith("listening"):
        findings.append(Finding("ok", "network", f"host {status.get('host')}: database connected, listening; "
                                                 f"{len(status['hosts'])} hosts"))
    else:
        findings.append(Finding("problem", "network", f"host {status.get('host')}: database {database}; "
                                f"notifications {network.get('notifications', '?')}",
                                "sends are refused or queued until the database is back; check CLAUDE_PEERS_DB "
                                "and the network to the database server"))
    for host in status["hosts"]:
        if not host.get("reachable") and not host.get("self") and not host.get("stopped"):
            findings.append(Finding("warn", "host", f"{host.get('host')} is unreachable: heartbeat "
                                    f"{float(host.get('heartbeat_age') or 0):.0f} s ago ({host.get('address')})",
                                    "its peers' mail waits in the database; start or reconnect that host's broker"))
    return findings
