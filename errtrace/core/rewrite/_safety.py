"""A conservative check that a regular expression cannot backtrack catastrophically.

Python's ``re`` is a backtracking engine: a pattern such as ``(a+)+$`` takes time
exponential in the input length when it fails to match. Rule files are edited by
operators and applied to text that comes from outside (provider responses), so every
pattern, built-in or user-supplied, must pass :func:`find_unsafe_construct` before it
is compiled. The check is deliberately simple and errs on the side of refusing:

* a quantifier that allows repetition applied to a group which itself contains an
  unbounded quantifier (``(a+)+``, ``(.*)*``, ``(?:\\s+\\w+){2,}``);
* two unbounded ``.`` repetitions with only optional items between them (``.*.*``,
  ``.+\\s*.*``), which let the engine split the same text in quadratically many ways.

It is a tokenizer, not a full regex parser; it handles escapes, character classes,
groups (including ``(?:``, ``(?P<name>`` and look-arounds), alternation and the
quantifiers ``* + ? {n} {n,} {n,m}`` with lazy/possessive suffixes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PATTERN_LENGTH = 512
"""Longest pattern accepted in a rule file (built-ins are far shorter)."""


@dataclass
class _Frame:
    has_unbounded: bool = False  # the group contains an unbounded quantifier somewhere
    dot_run_open: bool = False  # an unbounded ``.`` repeat seen, only optional items since


@dataclass(frozen=True)
class _Quant:
    min: int
    max: int | None  # None = unbounded
    end: int  # index just past the quantifier


def _read_quantifier(pattern: str, i: int) -> _Quant | None:
    """The quantifier starting at ``pattern[i]``, or None when there is none."""
    if i >= len(pattern):
        return None
    ch = pattern[i]
    if ch == "*":
        q = _Quant(0, None, i + 1)
    elif ch == "+":
        q = _Quant(1, None, i + 1)
    elif ch == "?":
        q = _Quant(0, 1, i + 1)
    elif ch == "{":
        close = pattern.find("}", i)
        if close == -1:
            return None
        body = pattern[i + 1 : close]
        lo_s, sep, hi_s = body.partition(",")
        if not lo_s.isdigit() and not (sep and lo_s == ""):
            return None  # a literal "{", as re treats it
        if hi_s and not hi_s.isdigit():
            return None
        lo = int(lo_s) if lo_s else 0
        hi: int | None = int(hi_s) if hi_s else (None if sep else lo)
        q = _Quant(lo, hi, close + 1)
    else:
        return None
    # lazy ``?`` or possessive ``+`` suffix does not change what can be matched
    if q.end < len(pattern) and pattern[q.end] in "?+":
        q = _Quant(q.min, q.max, q.end + 1)
    return q


def _skip_class(pattern: str, i: int) -> int:
    """Index just past the character class that opens at ``pattern[i] == "["``."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a leading "]" is literal
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
            continue
        if pattern[j] == "]":
            return j + 1
        j += 1
    return j


def find_unsafe_construct(pattern: str) -> str | None:
    """Describe why ``pattern`` may backtrack catastrophically, or return None if it looks safe."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern is {len(pattern)} characters, over the {MAX_PATTERN_LENGTH} limit"
    stack: list[_Frame] = [_Frame()]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        frame = stack[-1]
        atom_is_dot = False
        inner_unbounded = False
        if ch == "(":
            # skip the group's flag/name prefix; look-arounds are groups like any other
            j = i + 1
            if j < n and pattern[j] == "?":
                if pattern.startswith("?P<", j) or (
                    pattern.startswith("?<", j) and not pattern.startswith(("?<=", "?<!"), j)
                ):
                    j = pattern.find(">", j) + 1 or n
                elif pattern.startswith("?P=", j) or pattern.startswith("?#", j):
                    j = pattern.find(")", j)  # back-reference / comment: the ")" closes it
                    if j == -1:
                        return None  # unbalanced; re.compile reports it
                    i = j + 1
                    continue
                else:
                    j += 1
                    while j < n and pattern[j] not in ":=!)<":
                        j += 1  # inline flags such as (?i) or (?i:...)
                    if j < n and pattern[j] == "<":
                        j += 1
                    if j < n and pattern[j] != ")":
                        j += 1
            stack.append(_Frame())
            i = j
            continue
        if ch == ")":
            if len(stack) == 1:
                return None  # unbalanced; re.compile reports it
            closed = stack.pop()
            frame = stack[-1]
            inner_unbounded = closed.has_unbounded
            i += 1
        elif ch == "|":
            frame.dot_run_open = False
            i += 1
            continue
        elif ch == "\\":
            i += 2
        elif ch == "[":
            i = _skip_class(pattern, i)
        elif ch in "^$":
            i += 1
            continue
        else:
            atom_is_dot = ch == "."
            i += 1
        quant = _read_quantifier(pattern, i)
        if quant is None:
            if inner_unbounded:
                frame.has_unbounded = True
            frame.dot_run_open = False
            continue
        i = quant.end
        repeats = quant.max is None or quant.max > 1
        if inner_unbounded and repeats:
            return (
                "nested quantifier: a repeated group contains an unbounded repetition "
                "(like (a+)+ or (.*)*), which can take exponential time"
            )
        if quant.max is None or inner_unbounded:
            frame.has_unbounded = True
        if atom_is_dot and quant.max is None:
            if frame.dot_run_open:
                return (
                    "two unbounded '.' repetitions with only optional items between them "
                    "(like .*.*), which can take quadratic time"
                )
            frame.dot_run_open = True
        elif quant.min > 0:
            frame.dot_run_open = False
    return None


_ESCAPE_CLASSES = frozenset("dDwWsSbBAZzG0123456789")


def required_literal(pattern: str) -> str | None:
    """The longest plain-text run every match of ``pattern`` must contain, or None.

    Used as a cheap ``in`` gate before the regex runs: when that text is absent the
    regex cannot match, so it is not run. Only top-level literal characters count;
    groups, classes and escapes such as ``\\d`` end a run, a top-level ``|`` means no
    single run is required, and a character followed by a quantifier is left out.
    """
    runs: list[str] = []
    current: list[str] = []
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            token: str | None = None if nxt in _ESCAPE_CLASSES or nxt.isalpha() else nxt
            i += 2
        elif ch == "[":
            token = None
            i = _skip_class(pattern, i)
        elif ch == "(":
            depth += 1
            token = None
            i += 1
        elif ch == ")":
            depth -= 1
            token = None
            i += 1
        elif ch == "|":
            if depth == 0:
                return None
            token = None
            i += 1
        elif ch in ".^$":
            token = None
            i += 1
        else:
            token = ch
            i += 1
        quant = _read_quantifier(pattern, i)
        if quant is not None:
            i = quant.end
            if token is not None:
                if quant.min == 0:
                    token = None
                else:
                    # "ab+" still requires "ab", but nothing after it is adjacent for sure
                    current.append(token)
                    token = None
            runs.append("".join(current))
            current = []
            continue
        if token is None or depth > 0:
            runs.append("".join(current))
            current = []
        else:
            current.append(token)
    runs.append("".join(current))
    best = max(runs, key=len)
    return best if len(best) >= 3 else None
