"""twistd plugin: ``twistd -n claude-peers`` runs the broker (kept tiny; see claudepeers.broker.service)."""

from twisted.application.service import ServiceMaker

claudePeers = ServiceMaker(
    "claude-peers",
    "claudepeers.broker.service",
    "claude-peers broker: peer discovery and messaging for AI coding agents",
    "claude-peers",
)
