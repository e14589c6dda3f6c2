"""twistd plugin: ``twistd -n claude-peers`` runs the broker (kept tiny; see broker_tap)."""

from twisted.application.service import ServiceMaker

claudePeers = ServiceMaker(
    "claude-peers",
    "claudepeers.broker_tap",
    "claude-peers broker: peer discovery and messaging for AI coding agents",
    "claude-peers",
)
