"""The gate of a regex rule: the plain text every match contains, tested before the regex.

A wrong gate makes a rule silently never fire while ``errtrace rules check`` says the
file is fine, so the property checked here is the one the engine relies on: whenever
``re`` finds a match, the gate occurs in the text (in the lower-cased text for the
case-insensitive user rules), for patterns built from literal text, every kind of
escape, classes, repetitions, groups, alternations and inline flags.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from errtrace.cli import main
from errtrace.core._regex_safety import find_unsafe_construct, required_literal
from errtrace.core.rewrite import RuleSet

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

ESCAPES_RULES = r"""
rules:
  - id: acme-hex
    code: LLM_QUOTA_EXCEEDED
    patterns: ["\\x27team\\x27 budget exhausted"]     # \x27 is an apostrophe
  - id: acme-unicode
    code: LLM_QUOTA_EXCEEDED
    patterns: ["caf\\u00e9 credits gone"]            # \u00e9 is e with an acute accent
  - id: acme-verbose
    code: LLM_QUOTA_EXCEEDED
    patterns: ["(?x) spend \\s* cap \\s+ reached"]
  - id: acme-named
    code: LLM_OVERLOADED
    patterns: ["\\N{LATIN SMALL LETTER E WITH ACUTE}tat du pool: \\N{LATIN SMALL LETTER S}atur"]
  - id: acme-octal
    code: LLM_TIMEOUT
    patterns: ["\\047slow\\047 upstream"]
"""


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Error: 'team' budget exhausted", "acme-hex"),
        ("Café credits gone", "acme-unicode"),
        ("spend cap reached", "acme-verbose"),
        ("spend\tcap\nreached", "acme-verbose"),  # verbose mode: the spaces are not text
        ("ÉTAT DU POOL: SATURÉ", "acme-named"),
        ("'slow' upstream", "acme-octal"),
    ],
)
def test_rules_written_with_escapes_fire(tmp_path: Path, text: str, rule: str) -> None:
    path = tmp_path / "escapes.yaml"
    path.write_text(ESCAPES_RULES, encoding="utf-8")
    ruleset = RuleSet(builtins=False)
    assert ruleset.load(path, watch=False) == 5
    assert ruleset.classify(text).rule == rule


def test_cli_classifies_with_an_escaped_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "escapes.yaml"
    path.write_text(ESCAPES_RULES, encoding="utf-8")
    assert main(["rules", "check", str(path)]) == 0
    assert main(["classify", "--rules", str(path), "Error: 'team' budget exhausted"]) == 0
    out = capsys.readouterr().out
    assert "ok: 5 rules" in out
    assert "code:       LLM_QUOTA_EXCEEDED" in out
    assert "rule:       acme-hex" in out


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"\x27team\x27 budget exhausted", "'team' budget exhausted"),
        (r"caf\u00e9 credits gone", "café credits gone"),
        (r"\U0001F600 smile", "\U0001f600 smile"),
        (r"\N{LATIN SMALL LETTER E WITH ACUTE}tat civil", "état civil"),
        (r"\047quoted\047", "'quoted'"),
        (r"\0ab", "\x00ab"),
        (r"(?x) spend \s* cap \s+ reached", "reached"),
        (r"(?x) spend\ cap  # a comment", "spend cap"),
        (r"a(?:bcd)+e", "abcd"),
        (r"x(?i:ABC)yz", None),  # its own case rules: not part of the run
        (r"error [0-9]+: upstream", ": upstream"),
        (r"abc|abd", None),
        (r"(", None),
    ],
)
def test_required_literal_reads_the_pattern_as_re_does(pattern: str, literal: str | None) -> None:
    assert required_literal(pattern) == literal


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("TEAM Budget", "team budget"),
        # "i" also matches the dotless i (U+0131), "s" the long s (U+017F)
        ("insufficient", "uff"),
        ("Turkish SINIR", "turk"),
        ("\u0130stanbul", "tanbul"),  # its lower case is two characters
        # sigma, kappa and rho have extra case forms too
        ("\u03a3\u03c9\u03ba\u03c1\u03ac\u03c4\u03b7\u03c2", "\u03ac\u03c4\u03b7"),
    ],
)
def test_case_insensitive_literal_leaves_out_letters_folding_spells_otherwise(
    pattern: str, literal: str
) -> None:
    assert required_literal(pattern, ignorecase=True) == literal
    assert required_literal("(?i)" + pattern) == literal


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("sinir", "SINIR"),
        ("sinir", "s\u0131n\u0131r"),  # dotless i
        ("stop sequence", "\u017ftop \u017fequence"),  # long s
        ("\u03c3\u03c9\u03bc\u03b1", "\u03a3\u03a9\u039c\u0391"),
        ("\u03c3\u03c9\u03bc\u03b1", "\u03c2\u03c9\u03bc\u03b1"),  # final sigma
    ],
)
def test_a_user_rule_fires_wherever_its_case_insensitive_regex_matches(
    pattern: str, text: str
) -> None:
    ruleset = RuleSet(builtins=False)
    ruleset.set_user_rules(
        {"rules": [{"id": "r", "code": "LLM_TIMEOUT", "patterns": [pattern]}]}, "t"
    )
    assert re.search(pattern, text.lower(), re.IGNORECASE)
    assert ruleset.classify(text).rule == "r"


def test_fold_safe_letters_are_matched_only_by_their_lower_case() -> None:
    """What the gate assumes of ``re``: checked against ``re`` itself."""
    from errtrace.core._regex_safety import _folds_to_itself

    # every character that is its own lower case, up to the end of the Greek and
    # Cyrillic blocks and a few beyond
    lowered = "".join(
        ch
        for ch in map(chr, [*range(0x20, 0x530), 0x1C80, 0x1C81, 0x1E61, 0x1E9B, 0x1FBE, 0x212A])
        if ch.lower() == ch
    )
    for code in [*range(0x20, 0x530), 0x130, 0x212A, 0x1E9E]:
        ch = chr(code)
        low = _folds_to_itself(ch)
        if low is None:
            continue
        found = set(re.findall(re.escape(ch), lowered, re.IGNORECASE))
        assert found <= {low}, (ch, found)


# ------------------------------------------------------------------ the property

ALPHABET = (
    "abcdeikmnoqstxyzABEIKST 09'-#:.,"
    "\u00e9\u00c9\u00df\u0131\u0130\u017f\u212a\u03c3\u03c2\u03a3\u00b5\u03bc\u0436\u0416"
)
# each character's other spellings a case-insensitive match may meet
VARIANTS = {
    "i": "iI\u0131\u0130",
    "I": "iI\u0131\u0130",
    "s": "sS\u017f",
    "S": "sS\u017f",
    "k": "kK\u212a",
    "K": "kK\u212a",
    "\u03c3": "\u03c3\u03c2\u03a3",
    "\u03c2": "\u03c3\u03c2\u03a3",
    "\u00b5": "\u00b5\u03bc\u039c",
}

CHARS = st.sampled_from(ALPHABET)


@st.composite
def _char_piece(draw: st.DrawFn) -> tuple[str, str]:
    """One character written some way ``re`` accepts, with a text it matches."""
    ch = draw(CHARS)
    way = draw(st.sampled_from(["plain", "hex", "u", "U", "named", "octal", "class", "any"]))
    if way == "hex" and ord(ch) < 0x100:
        return f"\\x{ord(ch):02x}", ch
    if way == "u" and ord(ch) < 0x10000:
        return f"\\u{ord(ch):04x}", ch
    if way == "U":
        return f"\\U{ord(ch):08x}", ch
    if way == "named" and unicodedata.name(ch, ""):
        return f"\\N{{{unicodedata.name(ch)}}}", ch
    if way == "octal" and ord(ch) < 0o400:
        return f"\\{ord(ch):03o}", ch
    if way == "class":
        other = draw(CHARS)
        return f"[{re.escape(ch)}{re.escape(other)}]", draw(st.sampled_from([ch, other]))
    if way == "any":
        return draw(st.sampled_from([(r"\d", "7"), (r"\w", "q"), (r"\s", " "), (".", ch)]))
    return re.escape(ch), ch


def _pieces(depth: int, sep: str) -> st.SearchStrategy[tuple[str, str]]:
    if depth == 0:
        return _char_piece()
    return st.one_of(_char_piece(), _char_piece(), _group(depth - 1, sep))


@st.composite
def _sequence(draw: st.DrawFn, depth: int, sep: str) -> tuple[str, str]:
    """Pieces in a row, some repeated; ``sep`` (a space in verbose mode) between them."""
    parts = draw(st.lists(_pieces(depth, sep), min_size=1, max_size=8))
    patterns, text = [], ""
    for part_pattern, part_text in parts:
        quantifier = draw(st.sampled_from(["", "", "", "?", "+", "*", "{2}", "{1,3}"]))
        if quantifier:
            part_pattern = f"(?:{part_pattern}){quantifier}"
            times = {"?": [0, 1], "+": [1, 2], "*": [0, 2], "{2}": [2], "{1,3}": [1, 3]}
            part_text *= draw(st.sampled_from(times[quantifier]))
        patterns.append(part_pattern)
        text += part_text
    return sep.join(patterns), text


@st.composite
def _group(draw: st.DrawFn, depth: int, sep: str) -> tuple[str, str]:
    first = draw(_sequence(depth, sep))
    kind = draw(st.sampled_from(["(?:", "(", "(?i:", "(?-i:", "(?s:", "(?>", "alt"]))
    if kind == "alt":
        second = draw(_sequence(depth, sep))
        return f"(?:{first[0]}|{second[0]})", draw(st.sampled_from([first[1], second[1]]))
    return f"{kind}{first[0]})", first[1]


@st.composite
def patterns_and_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A pattern, and a text around a string it (most often) matches, in varied case."""
    flags = draw(st.sampled_from(["", "(?i)", "(?x)", "(?ix)"]))
    pattern, sample = draw(_sequence(2, " " if "x" in flags else ""))
    varied = "".join(draw(st.sampled_from(VARIANTS.get(ch, ch))) for ch in sample)
    before = draw(st.text(ALPHABET, max_size=4))
    after = draw(st.text(ALPHABET, max_size=4))
    return flags + pattern, before + draw(st.sampled_from([sample, varied])) + after


def _matches(pattern: str, text: str, flags: int = 0) -> bool:
    try:
        return re.search(pattern, text, flags) is not None
    except re.error:
        return False


@PROPERTY
@given(patterns_and_texts())
@example((r"\x27team\x27 budget exhausted", "Error: 'team' budget exhausted"))
@example(("caf\\u00e9 credits gone", "Café credits gone"))
@example(("(?x) spend \\s* cap \\s+ reached", "spend\tcap\treached"))
@example(("(?i)sinir", "s\u0131n\u0131r"))
@example(("(?i)stop", "\u017ftop"))
def test_every_match_contains_the_gate(case: tuple[str, str]) -> None:
    pattern, text = case
    if _matches(pattern, text):
        gate = required_literal(pattern)
        # a pattern with its own (?i) is matched case-insensitively: a lower-case gate
        folded = pattern.startswith(("(?i)", "(?ix)"))
        assert gate is None or gate in (text.lower() if folded else text)
    if _matches(pattern, text, re.IGNORECASE):
        gate = required_literal(pattern, ignorecase=True)
        assert gate is None or gate in text.lower()


@settings(PROPERTY, max_examples=100)
@given(patterns_and_texts())
@example((r"\x27team\x27 budget exhausted", "Error: 'team' budget exhausted"))
@example(("(?i)sinir", "s\u0131n\u0131r"))
def test_a_user_rule_fires_exactly_when_its_regex_matches(case: tuple[str, str]) -> None:
    """End to end through the rule table and its token index, as a rule file is used."""
    pattern, text = case
    assume(text.strip() and find_unsafe_construct(pattern) is None)  # blank text: no rule runs
    ruleset = RuleSet(builtins=False)
    ruleset.set_user_rules(
        {"rules": [{"id": "r", "code": "LLM_TIMEOUT", "patterns": [pattern]}]}, "t"
    )
    expected = _matches(pattern, text.lower(), re.IGNORECASE)
    assert (ruleset.classify(text).rule == "r") is expected
