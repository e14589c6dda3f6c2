"""What the fuzz tests share (``test_fuzz.py``: AMP; ``test_fuzz_mcp.py``: MCP and stdin): the
case counts and Hypothesis settings of the quick and the long passes, and the count of cases run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("CP_FUZZ_EXAMPLES", "120"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.data_too_large])
#: The slow suite's passes: ten times the cases on every surface.
LONG_SETTINGS = settings(FUZZ_SETTINGS, max_examples=EXAMPLES * 10)
COUNTS: dict[str, int] = {}


def counted(surface: str) -> None:
    """Count one fuzz case (reported by the slow run and in docs/reliability.md)."""
    COUNTS[surface] = COUNTS.get(surface, 0) + 1
