"""What one ``doctor`` check finds: the value the checks of every module return.

Kept apart from :mod:`.doctor` so that checks living elsewhere (:mod:`.hosts`) return
findings without importing the command that gathers them.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Finding:
    """One check's result: its level, what was found, and what to do (if anything)."""

    level: str  # ok, info, warn or problem
    check: str
    text: str
    fix: str = ""
