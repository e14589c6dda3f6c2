"""What the benchmarks share: this checkout and its test helpers on ``sys.path``, a broker of
the bench's own in a short temporary directory, and one percentile.

Import it first (``import support``): a bench run as ``python bench/x.py`` then finds
``claudepeers`` of this checkout and the helpers of ``tests/`` (``conftest.BrokerProcess``,
the stand-in agents) without installing anything.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0 to 1) of ``values`` by nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def scratch(prefix: str = "cp-") -> Path:
    """A fresh short directory under /tmp (UNIX socket paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextmanager
def broker(**env: str) -> Iterator[Any]:
    """A broker subprocess (``conftest.BrokerProcess``) in a scratch directory, its environment
    ``broker_env`` plus ``env``; stopped by pid and its directory removed afterwards."""
    from conftest import BrokerProcess, broker_env

    base = scratch()
    process = BrokerProcess(base, broker_env(base, **env))
    try:
        yield process.start()
    finally:
        process.stop()
        shutil.rmtree(base, ignore_errors=True)
