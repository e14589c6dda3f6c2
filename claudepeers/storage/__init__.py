"""Storage: all SQL of claude-peers (schema files, upgrades, the group-committing store)."""

from .database import DatabaseError, prepare
from .guard import Guard
from .store import Store, StoreError, open_pool

__all__ = ["DatabaseError", "Guard", "Store", "StoreError", "open_pool", "prepare"]
