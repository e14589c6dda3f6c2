"""Storage: all SQL of claude-peers (schema files, upgrades, the group-committing store)."""

from claudepeers.broker.storage.database import DatabaseError, prepare
from claudepeers.broker.storage.guard import Guard
from claudepeers.broker.storage.store import Store, StoreError, open_pool

__all__ = ["DatabaseError", "Guard", "Store", "StoreError", "open_pool", "prepare"]
