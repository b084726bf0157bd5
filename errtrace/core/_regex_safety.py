"""A conservative check that a regular expression cannot backtrack catastrophically.

Python's ``re`` is a backtracking engine: a pattern such as ``(a+)+$`` takes time
exponential in the input length when it fails to match, ``\\w+\\s*\\w+x`` cubic (with
the retry at every start position of ``re.search``). Rule files are edited by operators
and applied to text that comes from outside (provider responses, which often echo the
caller's input), and the business-code pattern of the configuration is applied to a
header of every request, so every such pattern, built-in or user-supplied, must pass
:func:`find_unsafe_construct` before it is compiled.

The pattern is parsed with ``re``'s own parser and walked left to right. A *variable
part* is a repetition or optional item (or an alternation whose alternatives can match
at one place); two of them *share text* when a character both can match exists and
every item required between them can match such a character too (a required item
neither matches forces the boundary). The check refuses, erring on the side of refusing:

* a repeated group that can match empty text, or that can split the same text into
  iterations in two ways (``(a|aa)+``, ``(?:a\\w?)+``, ``(a+)+``, ``(?:\\w+\\s?)+``): one
  with an unbounded repetition inside passes only when a character it requires marks
  where one iteration ends and the next begins (``(?:\\.[a-z0-9]+)*``, ``(?:,\\s*\\w+)+``);
* two unbounded repetitions that share text (``\\w+\\s*\\w+``, ``.*:.*x``, ``.*.*``);
* variable parts that share text with more than :data:`MAX_WAYS` ways to split it
  (``\\w?`` nine times), or more than :data:`MAX_WAYS_WITH_SCAN` beside an unbounded one;
* unbounded or long look-arounds, and back-references.

A search anchored at the start of the text (``^`` without MULTILINE, ``\\A``) fails at
once at every other start position, so nothing before the anchor shares text with what
follows it.

Character sets are compared on a sample of characters (ASCII, Latin-1, other scripts'
letters, digits and spaces, case-folding oddities, and every character the pattern
names), in every case. What passes still costs, per start position, at most one pass
over a run of text; when that run can also be the text before it (``\\w+\\d``: every
start position rescans it) :func:`scans_quadratically` says so and the engine gives the
pattern only the start of the message.

:func:`required_literal` reads the same parse tree for the plain text every match must
contain, which the classifier tests with ``in`` before it runs the regex.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from typing import Any

MAX_PATTERN_LENGTH = 512
"""Longest pattern accepted in a rule file (built-ins are far shorter)."""


_parser: Any
_c: Any
_compiler: Any
try:  # Python 3.11+: the parser behind ``re``, under its current name
    _parser = importlib.import_module("re._parser")
    _c = importlib.import_module("re._constants")
    _compiler = importlib.import_module("re._compiler")
except ImportError:  # pragma: no cover - Python 3.10
    _parser = importlib.import_module("sre_parse")
    _c = importlib.import_module("sre_constants")
    _compiler = importlib.import_module("sre_compile")

_LITERAL, _NOT_LITERAL, _ANY, _IN = _c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN
_CHAR_OPS = (_LITERAL, _NOT_LITERAL, _ANY, _IN)
_REPEAT_OPS = tuple(
    op
    for op in (
        _c.MAX_REPEAT,
        _c.MIN_REPEAT,
        getattr(_c, "POSSESSIVE_REPEAT", None),  # a*+ (3.11+): still rescans, so no better
    )
    if op is not None
)
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)
_UNBOUNDED = _c.MAXREPEAT

_CATEGORIES: dict[Any, re.Pattern[str]] = {
    _c.CATEGORY_DIGIT: re.compile(r"\d"),
    _c.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    _c.CATEGORY_SPACE: re.compile(r"\s"),
    _c.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    _c.CATEGORY_WORD: re.compile(r"\w"),
    _c.CATEGORY_NOT_WORD: re.compile(r"\W"),
}

# Characters two character sets are compared on: ASCII, Latin-1, characters of the
# classes \w \d \s from other scripts, case-folding oddities (the Kelvin sign matches
# "k" case-insensitively), plus every literal and range point of the pattern itself.
_BASE_SAMPLE = frozenset(
    [chr(i) for i in range(256)]
    + list(
        "\u0131\u0130\u017f\u212a\u212b\u03a3\u03c3\u03c2\u0416\u0436\u4e2d\u30a2"
        "\u0663\u0966\u00a0\u2003\u2028\u3000\u2014\u20ac\U0001f600\u200b\u01c5"
        "\u00df\ufb00\u2070\u00b2"
    )
)

MAX_LOOKAROUND_WIDTH = 100
"""Longest text a look-around in a rule may examine."""

MAX_WAYS = 256
"""How many ways optional parts of a pattern may split the same text between them."""

MAX_WAYS_WITH_SCAN = 2
"""The same, for a pattern whose search already costs quadratic time (see below)."""


class _Unsafe(Exception):
    """Carries the reason a pattern is refused out of the recursive walk."""


@dataclass
class _Var:
    """A variable-length part of the pattern, still able to share text with later parts.

    ``middle`` holds the character sets of the required items seen since: a later
    part can take text from this one only if every one of them can match a
    character both parts match.
    """

    chars: frozenset[str]
    unbounded: int  # unbounded repetitions in its chain of parts that share text
    ways: int  # product of the bounded parts' choices in that chain
    search: bool  # the chain includes the implicit ".*?" of re.search
    middle: list[frozenset[str]]
    label: str  # how the part is written, for error messages
    unbounded_label: str = ""  # an unbounded repetition in its chain

    def copy(self) -> _Var:
        return _Var(
            self.chars,
            self.unbounded,
            self.ways,
            self.search,
            list(self.middle),
            self.label,
            self.unbounded_label,
        )


_State = dict[int, _Var]

_NESTED = (
    "nested quantifier: a repeated group contains an unbounded repetition that can "
    "match text of the next iteration (like (a+)+ or (.*)*), which can take "
    "exponential time; start each iteration with a character the repetition cannot "
    "match, as in (?:,\\s*\\w+)+"
)
_EMPTY_GROUP = (
    "a repeated group that can match empty text (like (a?)+), which can take "
    "exponential time"
)
_AMBIGUOUS_GROUP = (
    "a repeated group can match the same text in more than one way (like (a|aa)+ or "
    "(?:a\\w?)+), which can take exponential time; make its alternatives start with "
    "different characters and drop optional parts that overlap"
)


def _two_unbounded(first: str, second: str) -> str:
    return (
        f"two unbounded repetitions ({first} and {second}) can match the same characters "
        "with nothing required between them that only one of them matches (like "
        "\\w+\\s*\\w+, .*.* or .*:.*x), which can take polynomial time; bound them "
        "({1,50}), make their character sets disjoint (\\S+ then a space), or separate "
        "them with a character neither matches"
    )


def _too_many_ways(limit: int, label: str) -> str:
    return (
        f"optional or repeated parts up to {label} that can match the same characters can "
        f"split the text in "
        f"more than {limit} ways (like \\w?\\w?\\w?\\w?x or \\w+\\w?\\w?x), which can "
        "take very long on a long message; make them match different characters"
    )


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-patterns directly inside one parsed item."""
    if op in _REPEAT_OPS:
        return [av[2]]
    if op is _c.SUBPATTERN:
        return [av[-1]]
    if op is _c.BRANCH:
        return list(av[1])
    if op is _c.ASSERT or op is _c.ASSERT_NOT:
        return [av[1]]
    if op is _ATOMIC:
        return [av]
    if op is _c.GROUPREF_EXISTS:
        return [x for x in av[1:] if x is not None]
    return []


def _collect(items: Any, points: set[str]) -> None:
    """Add the pattern's literal characters and points of its ranges to ``points``."""
    for op, av in items:
        if op is _LITERAL or op is _NOT_LITERAL:
            points.add(chr(av))
        elif op is _IN:
            for kind, value in av:
                if kind is _LITERAL:
                    points.add(chr(value))
                elif kind is _c.RANGE:
                    lo, hi = value
                    step = max(1, (hi - lo) // 32)
                    points.update(chr(i) for i in range(lo, hi + 1, step))
                    points.add(chr(hi))
        else:
            for sub in _children(op, av):
                _collect(sub, points)


def _case_variants(ch: str) -> set[str]:
    out = {ch}
    for v in (ch.lower(), ch.upper(), ch.casefold(), ch.swapcase()):
        if len(v) == 1:
            out.add(v)
    return out


def _member(op: Any, av: Any, ch: str) -> bool:
    """Does the one-character item (NOT_LITERAL or IN) match ``ch``, case-sensitively?"""
    if op is _NOT_LITERAL:
        return bool(ch != chr(av))
    negate = False
    hit = False
    for kind, value in av:
        if kind is _c.NEGATE:
            negate = True
        elif kind is _LITERAL:
            hit = hit or ch == chr(value)
        elif kind is _c.RANGE:
            hit = hit or value[0] <= ord(ch) <= value[1]
        elif kind is _c.CATEGORY:
            pattern = _CATEGORIES.get(value)
            hit = hit or pattern is None or pattern.fullmatch(ch) is not None
        else:  # an item this checker does not know: assume it matches
            hit = True
    return hit != negate


_CATEGORY_TEXT = {
    _c.CATEGORY_DIGIT: "\\d",
    _c.CATEGORY_NOT_DIGIT: "\\D",
    _c.CATEGORY_SPACE: "\\s",
    _c.CATEGORY_NOT_SPACE: "\\S",
    _c.CATEGORY_WORD: "\\w",
    _c.CATEGORY_NOT_WORD: "\\W",
}


def _render(item: Any) -> str:
    """A one-character item as it is written (roughly: a class is shown as [...])."""
    op, av = item
    if op is _ANY:
        return "."
    if op is _LITERAL:
        ch = chr(av)
        return ch if ch.isalnum() else re.escape(ch)
    if op is _IN and len(av) == 1 and av[0][0] is _c.CATEGORY:
        return _CATEGORY_TEXT.get(av[0][1], "[...]")
    return "[...]"


def _quantifier(lo: int, hi: int) -> str:
    if hi == _UNBOUNDED:
        return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    return "?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}"


class _Sample:
    """The characters two character sets are compared on; a set is the part it matches.

    Membership is tested in every case (user patterns are compiled with IGNORECASE),
    which can only make two sets look more alike: the check stays conservative.
    """

    def __init__(self, points: frozenset[str]) -> None:
        closed = set(points)
        for ch in points:
            closed |= _case_variants(ch)
        self.sample = frozenset(closed)
        # character -> the sample characters that may match it case-insensitively
        self.fold: dict[str, set[str]] = {}
        for ch in self.sample:
            for v in _case_variants(ch):
                self.fold.setdefault(v, set()).add(ch)
        self.cache: dict[str, frozenset[str]] = {}

    def charset(self, op: Any, av: Any) -> frozenset[str]:
        """The sample characters the one-character item may match, in any case."""
        if op is _ANY:
            return self.sample
        if op is _LITERAL:
            return frozenset(self.fold.get(chr(av), ()))
        key = f"{op}:{av!r}"
        found = self.cache.get(key)
        if found is None:
            found = frozenset(
                ch for ch in self.sample if any(_member(op, av, v) for v in _case_variants(ch))
            )
            if len(self.cache) < 4096:
                self.cache[key] = found
        return found


_BASE = _Sample(_BASE_SAMPLE)


class _Checker:
    """One pattern's analysis; see :func:`find_unsafe_construct`."""

    def __init__(self, tree: Any) -> None:
        self.multiline = bool(tree.state.flags & re.MULTILINE)
        points: set[str] = set()
        _collect(tree, points)
        extra = points - _BASE.sample
        self.chars = _BASE if not extra else _Sample(_BASE.sample | extra)
        self.sample = self.chars.sample
        self.quadratic = False
        self.next_id = 1

    # -------------------------------------------------------------- character sets

    def charset(self, op: Any, av: Any) -> frozenset[str]:
        """The sample characters the one-character item may match, in any case."""
        return self.chars.charset(op, av)

    def all_chars(self, items: Any) -> frozenset[str]:
        """Every sample character some one-character item inside ``items`` may match."""
        out: set[str] = set()
        for op, av in items:
            if op in _CHAR_OPS:
                out |= self.charset(op, av)
            elif op is not _c.ASSERT and op is not _c.ASSERT_NOT:
                for sub in _children(op, av):
                    out |= self.all_chars(sub)
        return frozenset(out)

    # -------------------------------------------------------------- structure

    def _has_unbounded(self, items: Any) -> bool:
        for op, av in items:
            if op in _REPEAT_OPS and av[1] == _UNBOUNDED:
                return True
            if any(self._has_unbounded(sub) for sub in _children(op, av)):
                return True
        return False

    def _prefix(self, items: Any) -> tuple[list[frozenset[str]], bool]:
        """Character sets of the leading one-character items, and whether that is all."""
        sets: list[frozenset[str]] = []
        for op, av in items:
            if op is _c.AT:
                continue
            if op not in _CHAR_OPS:
                return sets, False
            sets.append(self.charset(op, av))
        return sets, True

    def _alternatives_overlap(self, alternatives: list[Any]) -> bool:
        """May two alternatives match at the same place (one a prefix of the other)?"""
        prefixes = [self._prefix(alt)[0] for alt in alternatives]
        for i, first in enumerate(prefixes):
            for second in prefixes[i + 1 :]:
                if all(a & b for a, b in zip(first, second, strict=False)):
                    return True
        return False

    # -------------------------------------------------------------- the walk

    @staticmethod
    def _required(state: _State, chars: frozenset[str]) -> None:
        """A character from ``chars`` must be matched here."""
        for key, var in list(state.items()):
            if var.chars & chars:
                var.middle.append(chars)
            else:
                del state[key]  # nothing that reaches past here can be taken from it

    @staticmethod
    def _merge(states: list[_State]) -> _State:
        merged: _State = {}
        for state in states:
            for key, var in state.items():
                seen = merged.get(key)
                if seen is None:
                    merged[key] = var.copy()
                else:
                    # a chain through either branch: keep what both paths require
                    seen.middle = [a | b for a, b in zip(seen.middle, var.middle, strict=False)]
        return merged

    def _variable(
        self,
        state: _State,
        chars: frozenset[str],
        choices: int | None,
        strict: bool,
        label: str,
    ) -> _Var:
        """A part that matches text from ``chars`` in ``choices`` lengths (None: any)."""
        unbounded = 1 if choices is None else 0
        ways = 1 if choices is None else choices
        var = _Var(chars, unbounded, ways, False, [], label, label if unbounded else "")
        for earlier in state.values():
            shared = earlier.chars & chars
            if not shared or not all(m & shared for m in earlier.middle):
                continue
            if strict:
                raise _Unsafe(_AMBIGUOUS_GROUP)
            total = earlier.unbounded + unbounded
            product = earlier.ways * ways
            if total >= 2:
                raise _Unsafe(_two_unbounded(earlier.unbounded_label, label))
            quadratic = total >= 1 and earlier.search
            limit = MAX_WAYS_WITH_SCAN if quadratic else MAX_WAYS
            if product > limit:
                raise _Unsafe(_too_many_ways(limit, label))
            self.quadratic = self.quadratic or quadratic
            var.unbounded = max(var.unbounded, total)
            var.ways = max(var.ways, product)
            var.search = var.search or earlier.search
            var.unbounded_label = var.unbounded_label or earlier.unbounded_label
        return var

    def _add(self, state: _State, var: _Var) -> None:
        state[self.next_id] = var
        self.next_id += 1

    def walk(self, items: Any, state: _State, at_end: bool, strict: bool) -> _State:
        """The parts still able to share text after ``items``."""
        last = len(items) - 1
        for index, (op, av) in enumerate(items):
            end = at_end and index == last
            if op in _CHAR_OPS:
                self._required(state, self.charset(op, av))
            elif op is _c.AT:
                if av is _c.AT_BEGINNING_STRING or (
                    av is _c.AT_BEGINNING and not self.multiline
                ):
                    state.clear()  # only text start: nothing before can take text after
            elif op is _c.SUBPATTERN:
                state = self.walk(av[-1], state, end, strict)
            elif op is _ATOMIC:
                state = self.walk(av, state, end, strict)
            elif op is _c.BRANCH:
                state = self._branch(av[1], state, end, strict)
            elif op in _REPEAT_OPS:
                state = self._repeat(av, state, end, strict)
            elif op is _c.ASSERT or op is _c.ASSERT_NOT:
                body = av[1]
                if self._has_unbounded(body):
                    raise _Unsafe(
                        "an unbounded repetition inside a look-around, which is tried "
                        "again at every position and can take polynomial time"
                    )
                if body.getwidth()[1] > MAX_LOOKAROUND_WIDTH:
                    raise _Unsafe(
                        f"a look-around that can examine more than {MAX_LOOKAROUND_WIDTH} "
                        "characters"
                    )
                self.walk(body, {}, False, strict)
            elif op is _c.GROUPREF or op is _c.GROUPREF_EXISTS:
                raise _Unsafe(
                    "a back-reference (\\1, (?P=name), (?(1)...)): its cost is not "
                    "bounded by the pattern; match the text itself instead"
                )
            else:  # pragma: no cover - an item this checker does not know
                raise _Unsafe(f"unsupported regular expression construct {op}")
        return state

    def _branch(self, alternatives: list[Any], state: _State, end: bool, strict: bool) -> _State:
        overlap = self._alternatives_overlap(alternatives)
        var: _Var | None = None
        if overlap:
            if strict:
                raise _Unsafe(_AMBIGUOUS_GROUP)
            chars = frozenset().union(*(self.all_chars(alt) for alt in alternatives))
            var = self._variable(state, chars, len(alternatives), strict, "(...|...)")
        merged = self._merge(
            [
                self.walk(alt, {k: v.copy() for k, v in state.items()}, end, strict)
                for alt in alternatives
            ]
        )
        if var is not None:
            self._add(merged, var)
        return merged

    def _repeat(self, av: Any, state: _State, end: bool, strict: bool) -> _State:
        lo, hi, body = av
        if hi == 0:
            return state
        single = len(body) == 1 and body[0][0] in _CHAR_OPS
        if single and end:
            return state  # the last item: once reached the match is found, no backtracking
        choices = None if hi == _UNBOUNDED else hi - lo + 1
        if single:
            chars = self.charset(*body[0])
            label = _render(body[0]) + _quantifier(lo, hi)
            var = self._variable(state, chars, choices, strict, label) if lo != hi else None
            if lo:
                self._required(state, chars)
            if var is not None:
                self._add(state, var)
            return state
        if hi > 1:
            nested = self._has_unbounded(body)
            if body.getwidth()[0] == 0:
                raise _Unsafe(_NESTED if nested else _EMPTY_GROUP)
            # Every iteration must end at one place: two in a row are checked, strictly.
            # An unbounded repetition inside passes when something the iteration
            # requires stops it from taking the next iteration's text.
            try:
                self.walk([*body, *body], {}, False, True)
            except _Unsafe:
                if nested:
                    raise _Unsafe(_NESTED) from None
                raise
        if lo == hi:
            for _ in range(min(hi, 2)):
                state = self.walk(body, state, False, strict)
            return state
        label = "(...)" + _quantifier(lo, hi)
        var = self._variable(state, self.all_chars(body), choices, strict, label)
        taken = self.walk(body, {k: v.copy() for k, v in state.items()}, False, strict)
        state = self._merge([state, taken]) if lo == 0 else taken
        self._add(state, var)
        return state


@functools.lru_cache(maxsize=4096)
def _analyze(pattern: str, fullmatch: bool = False) -> tuple[str | None, bool]:
    if len(pattern) > MAX_PATTERN_LENGTH and not fullmatch:
        return f"pattern is {len(pattern)} characters, over the {MAX_PATTERN_LENGTH} limit", False
    try:
        tree = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None, False  # not a valid pattern: re.compile reports it
    checker = _Checker(tree)
    if fullmatch:
        # One start position, and the end of the text after the last item: it may
        # backtrack too.
        state: _State = {}
    else:
        # re.search tries every start position: an unbounded ".*?" before the pattern
        state = {0: _Var(checker.sample, 0, 1, True, [], "")}
    try:
        checker.walk(tree, state, not fullmatch, False)
    except _Unsafe as exc:
        return str(exc), False
    except RecursionError:
        return "pattern is nested too deeply to check", False
    return None, checker.quadratic


def find_unsafe_construct(pattern: str, *, fullmatch: bool = False) -> str | None:
    """Describe why ``pattern`` may backtrack catastrophically, or return None if it looks safe.

    By default the pattern is checked as ``re.search`` runs it, and may be at most
    :data:`MAX_PATTERN_LENGTH` characters long; ``fullmatch=True`` checks it as
    ``re.fullmatch`` runs it (one start position, the whole text), at any length.
    """
    return _analyze(pattern, fullmatch)[0]


def scans_quadratically(pattern: str) -> bool:
    """Can a failing search for the (safe) ``pattern`` take time quadratic in the text?

    True when an unbounded repetition, not at the end of the pattern, can match the
    text that leads up to it (``\\w+\\d``, ``x.*y``): ``re.search`` then rescans the
    same run from every start position. Such patterns run on a shorter prefix of the
    message (see ``USER_REGEX_MAX_INPUT`` in the engine).
    """
    return _analyze(pattern)[1]


# ---------------------------------------------------------------- required literal

# Characters that IGNORECASE matches beyond their own lower and upper case ("i" also
# matches the dotless "\u0131", "s" the long "\u017f", "\u03c3" the final "\u03c2"),
# as ``re`` lists them; None when this Python does not name the table.
_FOLD_TABLE: Any = getattr(_compiler, "_EXTRA_CASES", None) or getattr(
    _compiler, "_ignorecase_fixes", None
)
_EXTRA_CASES: frozenset[int] | None = (
    frozenset(_FOLD_TABLE) if isinstance(_FOLD_TABLE, dict) else None
)


def _folds_to_itself(ch: str) -> str | None:
    """``ch`` lower-cased, if every character IGNORECASE matches it with lower-cases to that.

    None for a character a case-insensitive match may find in another spelling in
    lower-cased text: one with extra case forms (``i``, ``s``, Greek sigma) or whose
    lower case is two characters (``\u0130``). Without ``re``'s table every non-ASCII
    character, ``i`` and ``s`` count as such.
    """
    low = ch.lower()
    if len(low) != 1:
        return None
    if _EXTRA_CASES is None:
        return low if low.isascii() and low not in "is" else None
    if ord(low) in _EXTRA_CASES or ord(ch) in _EXTRA_CASES:
        return None
    return low


_CASE_FLAGS = re.IGNORECASE | re.ASCII


def _literal_runs(items: Any, fold: bool, runs: list[str], current: list[str]) -> None:
    """Append to ``runs`` the literal text ``items`` match in a row; ``current`` is open.

    Items of a sequence match consecutive stretches of the text, so consecutive literal
    characters (also across a plain group, and into the first pass of a repetition that
    must run once) are text every match contains. Anything else ends the run: what this
    walk does not know can only make the gate shorter, never wrong.
    """

    def close() -> None:
        runs.append("".join(current))
        current.clear()

    for op, av in items:
        if op is _LITERAL:
            ch = chr(av)
            low = _folds_to_itself(ch) if fold else ch
            if low is None:
                close()
            else:
                current.append(low)
        elif op is _c.SUBPATTERN and not (av[1] | av[2]) & _CASE_FLAGS:
            # a group that keeps the case rules (flags such as (?s:...) change nothing here)
            _literal_runs(av[-1], fold, runs, current)
        elif op is _ATOMIC:
            _literal_runs(av, fold, runs, current)
        elif op in _REPEAT_OPS and av[0] >= 1:
            # the first pass follows what comes before; after it may come another one
            _literal_runs(av[2], fold, runs, current)
            if av[0] != 1 or av[1] != 1:
                close()
        else:
            close()


@functools.lru_cache(maxsize=4096)
def required_literal(pattern: str, *, ignorecase: bool = False) -> str | None:
    """The longest plain text (at least 3 characters) every match of ``pattern`` contains.

    Used as a cheap ``in`` gate before the regex runs: when that text is absent the
    regex cannot match, so it is not run. The pattern is read by ``re``'s own parser,
    so escapes (``\\x27``, ``\\u00e9``, ``\\N{...}``, octal), verbose mode and
    character classes mean what they mean to ``re``. Only characters the walk is sure of
    count; anything else (a class, an optional part, an alternation, a look-around, a
    group that changes the case rules) ends a run, and a pattern that does not parse
    gives None.

    With ``ignorecase`` (or the pattern's own ``(?i)``) the text is lower case, and every
    string ``s`` in which ``re.search(pattern, s, re.IGNORECASE)`` finds a match holds
    it in ``s.lower()``: characters that case folding can spell otherwise in
    lower-cased text (``i``, ``s``, ``\u0130``, Greek sigma, ...) end a run. Without
    it, every string in which ``re.search(pattern, s)`` finds a match holds it as is.
    """
    try:
        tree = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None
    fold = ignorecase or bool(tree.state.flags & re.IGNORECASE)
    runs: list[str] = []
    current: list[str] = []
    try:
        _literal_runs(tree, fold, runs, current)
    except RecursionError:
        return None
    runs.append("".join(current))
    best = max(runs, key=len)
    return best if len(best) >= 3 else None
