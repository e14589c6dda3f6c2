"""Path patterns of claims: their normal form, what one covers, and whether two overlap.

A pattern is a path relative to the repository's top level, components split by ``/``.
A component is literal text or a glob: ``*`` (any run of characters inside one
component), ``?`` (one character), ``[...]`` (one character of a class, ``[!...]`` or
``[^...]`` negated, ranges as ``a-z``); a component that is exactly ``**`` stands for any
number of components, none included. There are no escapes. A pattern **covers** every
path it matches and everything below such a path: ``src/api`` claims the directory and
its files, ``src/*.py`` the Python files directly in ``src``, ``**/*.sql`` every SQL file.

Two patterns **overlap** when some path is covered by both. That is decided exactly, not
guessed from literal prefixes: each pattern is a small automaton (over characters inside a
component, over components across ``/``), and :func:`overlap` searches their product for
a path both accept, which it returns as the witness (None: they are disjoint). So
``src/*.py`` and ``src/a*`` overlap (``src/a.py``), ``src/*.py`` and ``src/*.sql`` do not,
``src`` and ``src/x/y.c`` do (below the directory), ``**/test_*.py`` and
``tests/test_a.py`` do. ``tests/test_pathglob.py`` holds the search to a brute-force
check. Patterns are bounded (:data:`MAX_PATTERN_CHARS`), so the search is too.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

#: The longest pattern accepted (its search against another costs at most its length squared).
MAX_PATTERN_CHARS = 256

#: ``**``: any number of components (a marker in a parsed pattern).
DOUBLE_STAR = "**"
#: ``*`` inside a component (a marker in a parsed component).
STAR = "*"
_MAX_CHAR = 0x10FFFF
_SLASH = ord("/")


class PatternError(ValueError):
    """A pattern that cannot be claimed; the message says why."""


@dataclass(frozen=True)
class CharClass:
    """One character of a component: ``ranges`` (inclusive code points), or any other
    character when ``negated``. Never ``/``."""

    negated: bool
    ranges: tuple[tuple[int, int], ...]

    def first(self, other: "CharClass | None" = None) -> str | None:
        """A character in this class (and in ``other``, if given), preferring letters; None if none."""
        classes = [self] if other is None else [self, other]
        positive = [c for c in classes if not c.negated]
        excluded = sorted([(_SLASH, _SLASH)] + [r for c in classes if c.negated for r in c.ranges])
        candidates = [(ord("a"), ord("z")), (ord("0"), ord("9")), (0x21, _MAX_CHAR)]
        if positive:
            candidates = list(positive[0].ranges)
            for more in positive[1:]:
                candidates = _intersect(candidates, more.ranges)
        for low, high in candidates:
            found = _first_outside(low, high, excluded)
            if found is not None:
                return chr(found)
        return None


Component = tuple  # of STAR and CharClass atoms; or the DOUBLE_STAR marker


def _intersect(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(x, y), min(p, q)) for x, p in a for y, q in b if max(x, y) <= min(p, q)]


def _first_outside(low: int, high: int, excluded: list[tuple[int, int]]) -> int | None:
    """The smallest code point in [low, high] inside none of the (sorted) excluded ranges."""
    point = low
    for start, end in excluded:
        if end < point:
            continue
        if start > point:
            break
        point = end + 1
    return point if point <= high else None


def normalize(pattern: str, root: str | None = None) -> str:
    """The normal form of a claimed pattern (relative, ``/``-separated, no ``.`` parts).

    An absolute pattern must lie under ``root`` (the repository's top level) and is made
    relative to it. ``.`` (or the root itself) is the whole repository: ``**``. Raises
    :class:`PatternError` with the reason.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise PatternError("a path pattern is empty")
    text = pattern.strip()
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"the pattern {text[:40]!r}... is longer than {MAX_PATTERN_CHARS} characters")
    if not text.isprintable():
        raise PatternError(f"the pattern {text!r} holds control characters")
    if text.startswith("/"):
        top = posixpath.normpath(root) if root else None
        if top is None or not (text == top or text.startswith(top.rstrip("/") + "/")):
            raise PatternError(f"{text} is outside your repository ({root or 'none'}); give a path relative to its top level")
        text = text[len(top):] or "."
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise PatternError(f"the pattern {pattern!r} leaves the repository ('..')")
        if parts and parts[-1] == DOUBLE_STAR and part == DOUBLE_STAR:
            continue
        parts.append(part)
    while len(parts) > 1 and parts[-1] == DOUBLE_STAR:
        parts.pop()  # everything below a covered path is covered anyway
    if not parts:
        return DOUBLE_STAR
    normal = "/".join(parts)
    parse(normal)  # raises on a malformed class
    return normal


@lru_cache(maxsize=4096)
def parse(pattern: str) -> tuple:
    """The pattern as components (each DOUBLE_STAR or a tuple of atoms)."""
    return tuple(DOUBLE_STAR if part == DOUBLE_STAR else _parse_component(part, pattern)
                 for part in pattern.split("/") if part)


def _parse_component(text: str, pattern: str) -> Component:
    atoms: list = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "*":
            if not atoms or atoms[-1] is not STAR:
                atoms.append(STAR)
            index += 1
        elif char == "?":
            atoms.append(CharClass(True, ()))
            index += 1
        elif char == "[":
            end = text.find("]", index + 2 if text[index + 1:index + 2] in ("!", "^") else index + 1)
            if text[index + 1:index + 3] in ("!]", "^]") or text[index + 1:index + 2] == "]":
                end = text.find("]", end + 1) if end != -1 else -1
            if end == -1:
                raise PatternError(f"the pattern {pattern!r} opens a character class '[' it does not close")
            atoms.append(_parse_class(text[index + 1:end]))
            index = end + 1
        else:
            atoms.append(CharClass(False, ((ord(char), ord(char)),)))
            index += 1
    return tuple(atoms)


def _parse_class(body: str) -> CharClass:
    negated = body[:1] in ("!", "^")
    if negated:
        body = body[1:]
    ranges = []
    index = 0
    while index < len(body):
        if index + 2 < len(body) and body[index + 1] == "-":
            low, high = ord(body[index]), ord(body[index + 2])
            if low <= high:
                ranges.append((low, high))
            index += 3
        else:
            ranges.append((ord(body[index]), ord(body[index])))
            index += 1
    return CharClass(negated, tuple(sorted(ranges)))


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    pieces = []
    for component in parse(pattern):
        if component is DOUBLE_STAR:
            pieces.append("(?:/[^/]+)*")
            continue
        text = "/"
        for atom in component:
            text += "[^/]*" if atom is STAR else _class_regex(atom)
        pieces.append(text)
    return re.compile("".join(pieces) + "(?:/[^/]+)*", re.DOTALL)


def _class_regex(atom: CharClass) -> str:
    body = "".join(re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
                   for low, high in atom.ranges)
    if atom.negated:
        return f"[^/{body}]"
    return f"(?!/)[{body}]" if body else "(?!)"


def covers(pattern: str, path: str) -> bool:
    """True when ``path`` (literal, relative, normal form) is covered by ``pattern``."""
    return _regex(pattern).fullmatch("/" + path) is not None


def overlap(first: str, second: str) -> str | None:
    """A path covered by both patterns (normal forms), or None when they are disjoint."""
    found = _search(parse(first) + (DOUBLE_STAR,), parse(second) + (DOUBLE_STAR,),
                    lambda c: c is DOUBLE_STAR, _any_component, _common_component)
    if found is None:
        return None
    return "/".join(found) or "x"  # both cover everything: any path will do


def _any_component(component: Component) -> str | None:
    return _common_component(component, (STAR,))


def _common_component(a: Component, b: Component) -> str | None:
    found = _search(a, b, lambda atom: atom is STAR, lambda atom: atom.first(), lambda x, y: x.first(y))
    if found is None:
        return None
    # Reaching the end on stars alone means both match any text: a component is never empty.
    return "".join(found) or "x"


def _search(a: Sequence, b: Sequence, is_star: Callable[[object], bool], any_of: Callable[[object], str | None],
            common: Callable[[object, object], str | None]) -> list[str] | None:
    """Breadth-first search of the product of two patterns (a star eats any run of the
    other side's symbols); the labels of a path to the end of both, or None."""
    start, goal = (0, 0), (len(a), len(b))
    parent: dict[tuple[int, int], tuple[tuple[int, int], str | None] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if state == goal:
            labels: list[str] = []
            step = parent[state]
            while step is not None:
                previous, label = step
                if label is not None:
                    labels.append(label)
                step = parent[previous]
            return labels[::-1]
        i, j = state
        moves: list[tuple[tuple[int, int], str | None]] = []
        star_a = i < len(a) and is_star(a[i])
        star_b = j < len(b) and is_star(b[j])
        if star_a:
            moves.append(((i + 1, j), None))
            if j < len(b) and not star_b:
                label = any_of(b[j])
                if label is not None:
                    moves.append(((i, j + 1), label))
        if star_b:
            moves.append(((i, j + 1), None))
            if i < len(a) and not star_a:
                label = any_of(a[i])
                if label is not None:
                    moves.append(((i + 1, j), label))
        if i < len(a) and j < len(b) and not star_a and not star_b:
            label = common(a[i], b[j])
            if label is not None:
                moves.append(((i + 1, j + 1), label))
        for target, label in moves:
            if target not in parent:
                parent[target] = (state, label)
                queue.append(target)
    return None
