"""A token-anchored inverted index: which literal keys a text may contain, cheaply.

The classifier tests many plain strings with ``in`` (rule literals, ``needles``, the
gate of each regex, provider names, the gates of the detail extractors). Each of those
*keys* costs a scan of the whole text, which on a 4 KB message adds up to far more
than the decision itself. Instead the text is split once into *tokens* (maximal runs
of ``[a-z0-9]`` in the lower-cased text) and every key gets an *anchor*: one run of
token characters inside the key, and what the key's surroundings say about the token
of the text it must fall in:

======== =================================================== =====================
 kind     the run in the key is ...                           a text token must ...
======== =================================================== =====================
 exact    bounded by non-token characters on both sides       equal it
 prefix   bounded on the left only (``" per min"``: ``min``)  start with it
 suffix   bounded on the right only (``"rate "``: ``rate``)   end with it
 inside   the whole key (``"readtimeout"``)                   contain it
======== =================================================== =====================

If the key occurs in the text, its anchor holds for some token, so a key whose anchor
holds for no token cannot occur and its ``in`` test is skipped: the index only ever
removes work whose answer is "no", never changes an answer. A key with no token
character at all (``"'$."``) has no anchor and is always tested.

What a token satisfies is worked out once per distinct token and cached, and so is
what the tokens of each whitespace-separated chunk satisfy: the per-message cost is
one ``str.split`` plus a dict lookup per distinct chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import reduce
from operator import or_

TOKEN_RE = re.compile(r"[a-z0-9]+")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# every other ASCII character becomes a space (str.translate is fast on ASCII text)
_SPLIT = str.maketrans({chr(i): " " for i in range(128) if chr(i) not in _TOKEN_CHARS})

EXACT = "exact"
PREFIX = "prefix"
SUFFIX = "suffix"
INSIDE = "inside"

Anchor = tuple[str, str]
"""``(kind, token text)``."""

# frequent words make poor anchors: a rule anchored on "the" is a candidate for most texts
_COMMON = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "been", "by", "can", "could", "do", "error"}
    | {"for", "from", "has", "have", "in", "is", "it", "not", "of", "on", "or", "that", "the"}
    | {"this", "to", "was", "will", "with", "you", "your"}
)
_CACHE_MAX = 20_000


_META = frozenset("\\.^$*+?{}[]|()")


_ALTERNATIVES = re.compile(r"\\b\(\?:([^\\.^$*+?{}\[\]()]+)\)([^\\.^$*+?{}\[\]|()]{3,})")


def literal_first(pattern: str) -> str:
    r"""A pattern that starts with ``\b`` or ``\W`` rewritten to start with plain text.

    ``re`` finds a pattern that starts with plain text by jumping between occurrences
    of that text; one that starts with ``\b`` is tried at every position instead, ten
    times slower on long input. So ``\bword...`` becomes ``word(?<=\bword)...`` (the
    same matches), ``\Wword...`` becomes ``word(?<=\Wword)...`` (the same matches,
    each starting one character later), and ``\b(?:a|b c) text...`` becomes
    ``text(?:(?<=\ba text)|(?<=\bb c text))...`` (a match where the original has one).
    """
    alternatives = _ALTERNATIVES.match(pattern)
    if alternatives:
        text = alternatives.group(2)
        if text[-1] in "*+?{":  # pragma: no cover - excluded by the expression
            return pattern
        nxt = pattern[alternatives.end() : alternatives.end() + 1]
        if nxt and nxt in "*+?{":
            return pattern  # the last character is quantified
        behind = "|".join(f"(?<=\\b{option}{text})" for option in alternatives.group(1).split("|"))
        return f"{text}(?:{behind}){pattern[alternatives.end() :]}"
    if not pattern.startswith(("\\b", "\\W")):
        return pattern
    end = 2
    while end < len(pattern) and pattern[end] not in _META:
        end += 1
    run = pattern[2:end]
    if end < len(pattern) and pattern[end] in "*+?{":
        run = run[:-1]  # the last character is quantified: not part of the plain text
    if not run:
        return pattern
    return f"{run}(?<={pattern[:2]}{run}){pattern[2 + len(run) :]}"


def tokens(lowered: str) -> set[str]:
    """The distinct tokens (maximal ``[a-z0-9]`` runs) of lower-cased text."""
    if not lowered.isascii():
        # other characters separate tokens just as "?" does; translate is fast on ASCII
        lowered = lowered.encode("ascii", "replace").decode("ascii")
    return set(lowered.translate(_SPLIT).split())


def _score(kind: str, token: str) -> tuple[int, int]:
    if kind == EXACT:
        tier = 2 if token in _COMMON or len(token) < 3 else 4
    elif kind == INSIDE:
        tier = 1
    else:
        tier = 3 if len(token) >= 4 and token not in _COMMON else 2
    return (tier, len(token))


def anchors_of(key: str) -> list[Anchor]:
    """The anchor of every token run of a lower-case key (all must hold if it occurs)."""
    found: list[Anchor] = []
    size = len(key)
    for match in TOKEN_RE.finditer(key):
        start, end = match.span()
        left, right = start > 0, end < size
        if left and right:
            kind = EXACT
        elif left:
            kind = PREFIX
        elif right:
            kind = SUFFIX
        else:
            kind = INSIDE
        found.append((kind, match.group()))
    return found


def anchor_of(key: str) -> Anchor | None:
    """The most selective anchor of a lower-case key, or None if it has no token run."""
    runs = anchors_of(key)
    return max(runs, key=lambda anchor: _score(*anchor)) if runs else None


def quality(keys: Iterable[str]) -> tuple[int, int]:
    """How selective the weakest anchor of ``keys`` is ((0, 0): some key has none)."""
    worst = (9, 0)
    for key in keys:
        found = anchor_of(key)
        if found is None:
            return (0, 0)
        worst = min(worst, _score(*found))
    return worst


class TokenIndex:
    """Bits for anchors and for groups of keys, set from the tokens of a text.

    Each anchor has a bit; a key may occur only if the bits of all its anchors are
    set (:meth:`key` gives that mask). Bits below ``first_bit`` belong to the caller:
    a group bit (a rule's) is set when one of its trigger keys' best anchor holds.
    """

    def __init__(self, first_bit: int = 0) -> None:
        self._next = first_bit
        self.always = 0
        """Bits set for every text (groups with a key that has no anchor)."""
        self.keys: dict[str, tuple[int, bool]] = {}
        """Each registered key's ``(mask, sure)``; see :meth:`key`."""
        self._anchor_bits: dict[Anchor, int] = {}
        self._anchors: dict[Anchor, int] = {}
        self._exact: dict[str, int] = {}
        self._prefix: dict[str, int] = {}
        self._suffix: dict[str, int] = {}
        self._prefix_lengths: tuple[int, ...] = ()
        self._suffix_lengths: tuple[int, ...] = ()
        self._inside: tuple[tuple[str, int], ...] = ()
        self._cache: dict[str, int] = {}
        self._chunks: dict[str, int] = {}

    # ------------------------------------------------------------ building

    def key(self, key: str, group: int = 0) -> tuple[int, bool]:
        """``(mask, sure)`` for a key; ``group`` bits are set too when it may occur.

        The key may occur only if ``hits & mask == mask`` (a key without token
        characters has mask 0: always test it). ``sure`` means that condition already
        proves the key occurs (the key is one whole token run): skip its ``in`` test.
        """
        found = self.keys.get(key)
        if found is None:
            runs = anchors_of(key)
            mask = 0
            for anchor in runs:
                mask |= self._anchor_bit(anchor)
            found = self.keys[key] = (mask, len(runs) == 1 and runs[0][1] == key)
        if group:
            self.add_group(key, group)
        return found

    def _anchor_bit(self, anchor: Anchor) -> int:
        bit = self._anchor_bits.get(anchor)
        if bit is None:
            bit = self._anchor_bits[anchor] = self.new_bit()
            self._anchors[anchor] = self._anchors.get(anchor, 0) | bit
        return bit

    def add_group(self, key: str, group: int) -> None:
        """Set ``group`` bits whenever ``key`` may occur."""
        anchor = anchor_of(key)
        if anchor is None:
            self.always |= group
        else:
            self._anchors[anchor] = self._anchors.get(anchor, 0) | group

    def exact_token(self, token: str, bits: int) -> None:
        """Set ``bits`` whenever ``token`` is one of the text's tokens."""
        anchor = (EXACT, token)
        self._anchors[anchor] = self._anchors.get(anchor, 0) | bits

    def new_bit(self) -> int:
        """A fresh bit for the caller's own use."""
        bit = 1 << self._next
        self._next += 1
        return bit

    def freeze(self) -> TokenIndex:
        """Arrange the anchors for lookup; call once, after the last key."""
        tables: dict[str, dict[str, int]] = {EXACT: {}, PREFIX: {}, SUFFIX: {}, INSIDE: {}}
        for (kind, text), bits in self._anchors.items():
            tables[kind][text] = tables[kind].get(text, 0) | bits
        self._exact = tables[EXACT]
        self._prefix = tables[PREFIX]
        self._suffix = tables[SUFFIX]
        self._prefix_lengths = tuple(sorted({len(t) for t in self._prefix}))
        self._suffix_lengths = tuple(sorted({len(t) for t in self._suffix}))
        self._inside = tuple(sorted(tables[INSIDE].items(), key=lambda item: len(item[0])))
        self._cache = {}
        self._chunks = {}
        return self

    # ------------------------------------------------------------ lookup

    def bits_of(self, key: str) -> tuple[int, bool] | None:
        """``(mask, sure)`` of a registered key, or None."""
        return self.keys.get(key)

    def _token_bits(self, token: str) -> int:
        bits = self._exact.get(token, 0)
        size = len(token)
        for length in self._prefix_lengths:
            if length > size:
                break
            bits |= self._prefix.get(token[:length], 0)
        for length in self._suffix_lengths:
            if length > size:
                break
            bits |= self._suffix.get(token[-length:], 0)
        for text, more in self._inside:
            if len(text) > size:
                break
            if text in token:
                bits |= more
        return bits

    def _chunk_bits(self, chunk: str) -> int:
        cache = self._cache
        bits = 0
        for token in tokens(chunk):
            known = cache.get(token)
            if known is None:
                known = cache[token] = self._token_bits(token)
            bits |= known
        return bits

    def scan(self, lowered: str) -> int:
        """The bits of every anchor and group that holds in ``lowered``.

        The text is split on whitespace only (tokens never span it), which is cheaper
        than splitting into tokens; what each chunk's tokens satisfy is cached.
        """
        chunks = self._chunks
        found = set(lowered.split())
        try:
            return reduce(or_, map(chunks.get, found), self.always)
        except TypeError:  # "| None": a chunk not seen before
            pass
        # chunks not seen before: work them out once
        if len(chunks) + len(found) > _CACHE_MAX:
            chunks.clear()
        if len(self._cache) > _CACHE_MAX:
            self._cache.clear()
        hits = self.always
        for chunk in found:
            bits = chunks.get(chunk)
            if bits is None:
                bits = chunks[chunk] = self._chunk_bits(chunk)
            hits |= bits
        return hits
