"""Claim patterns: normal form, coverage, and the exact overlap search held to brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claudepeers.broker.pathglob import PatternError, covers, normalize, overlap

#: Small alphabets, so that brute force over every short path can find any common path.
LETTERS = "ab"
SEGMENTS = ["a", "b", "ab", "*", "a*", "*b", "?", "[ab]", "[!a]", "**", "a?b"]


def all_paths() -> list[str]:
    """Every path of one or two components of up to three letters over LETTERS and one other
    letter (which only negated classes and stars match), and of three components of up to two."""
    def names(width: int) -> list[str]:
        return ["".join(p) for n in range(1, width + 1) for p in itertools.product(LETTERS + "c", repeat=n)]

    paths = names(3) + ["/".join(p) for p in itertools.product(names(3), repeat=2)]
    return paths + ["/".join(p) for p in itertools.product(names(2), repeat=3)]


PATHS = all_paths()
patterns = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join).map(normalize)


def check_exact(first: str, second: str) -> None:
    """A witness is covered by both patterns; no witness means no short path is covered by both."""
    witness = overlap(first, second)
    if witness is not None:
        assert covers(first, witness) and covers(second, witness), (first, second, witness)
    else:
        common = next((p for p in PATHS if covers(first, p) and covers(second, p)), None)
        assert common is None, (first, second, common)


@settings(max_examples=60)
@given(patterns, patterns)
def test_overlap_is_exact_against_brute_force(first: str, second: str) -> None:
    """A witness is covered by both patterns; no witness means no short path is covered by both."""
    check_exact(first, second)


@pytest.mark.slow
@settings(max_examples=3000)
@given(patterns, patterns)
def test_overlap_is_exact_against_brute_force_long_run(first: str, second: str) -> None:
    """The same, on many more pairs (slow suite)."""
    check_exact(first, second)


@settings(max_examples=60)
@given(patterns, patterns)
def test_overlap_is_symmetric(first: str, second: str) -> None:
    """Overlap does not depend on which claim came first."""
    assert (overlap(first, second) is None) == (overlap(second, first) is None)


@settings(max_examples=40)
@given(patterns)
def test_a_pattern_overlaps_itself_and_everything_it_covers(pattern: str) -> None:
    """Re-claiming the same pattern, or a path it covers, is an overlap."""
    assert overlap(pattern, pattern) is not None
    for path in PATHS[:80]:
        if covers(pattern, path):
            assert overlap(pattern, path) is not None


@pytest.mark.parametrize(("first", "second", "overlapping"), [
    ("src/*.py", "src/a*", True),
    ("src/*.py", "src/*.sql", False),
    ("src", "src/x/y.c", True),
    ("src/api", "src/apis", False),
    ("**/test_*.py", "tests/test_a.py", True),
    ("**/*.md", "docs", True),  # a Markdown file below docs
    ("docs/*.md", "docs/img", False),  # docs/img/x.md is not directly in docs
    ("a/b", "a/c", False),
    ("[ab]x", "[!ab]x", False),
])
def test_examples(first: str, second: str, overlapping: bool) -> None:
    """The rule on the cases the documentation names."""
    assert (overlap(normalize(first), normalize(second)) is not None) == overlapping


def test_directory_claim_covers_below_but_a_file_glob_does_not_reach_subdirectories() -> None:
    """``src`` covers ``src/x/y``; ``src/*.py`` covers ``src/a.py`` but not ``src/d/a.py``."""
    assert covers("src", "src/x/y")
    assert covers("src/*.py", "src/a.py") and not covers("src/*.py", "src/d/a.py")
    assert covers("**/*.py", "a/b/c.py") and covers("**", "anything")


@pytest.mark.parametrize(("given_pattern", "normal"), [
    ("./src//api/", "src/api"), ("src/**/**", "src"), (".", "**"), ("/repo/src", "src"), ("/repo", "**"),
])
def test_normal_form(given_pattern: str, normal: str) -> None:
    """Relative, single slashes, no '.' parts, trailing '**' dropped, absolute paths made relative."""
    assert normalize(given_pattern, "/repo") == normal


@pytest.mark.parametrize(("bad", "why"), [
    ("", "empty"), ("../x", "leaves"), ("/elsewhere/x", "outside"), ("src/[ab", "does not close"),
    ("a" * 300, "longer than"), ("a\x00b", "control"),
])
def test_bad_patterns_are_refused_with_the_reason(bad: str, why: str) -> None:
    """Each malformed pattern gets a specific error."""
    with pytest.raises(PatternError, match=why):
        normalize(bad, "/repo")
