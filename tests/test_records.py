"""Value types: the ISO time format every message and event carries."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from claudepeers.broker.records import iso


def reference(when: float) -> str:
    """What datetime itself prints, in the form the wire uses."""
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.floats(min_value=-1e9, max_value=4e9, allow_nan=False))
def test_iso_matches_datetime_to_the_millisecond(when: float) -> None:
    """The cached formatting rounds and prints exactly as datetime does, for any time."""
    assert iso(when) == reference(when)


def test_iso_at_second_boundaries_and_none() -> None:
    """Times just below a whole second round like datetime; None stays None."""
    for when in (0.0, 1.9995, 1.9999996, 1764028799.9999999, 1764028800.0005, -0.0004):
        assert iso(when) == reference(when)
    assert iso(None) is None
