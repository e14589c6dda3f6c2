"""claude-peers: peer discovery and messaging for AI coding agents on one machine."""

__version__ = "0.1.0"
