"""Free-text LLM error -> semantic code: the classifier, its rules and hot reload.

::

    >>> from errtrace.core.rewrite import classify
    >>> c = classify("Rate limit reached for gpt-4o in organization org-x on tokens "
    ...              "per min (TPM): Limit 30000, Used 29937, Requested 385. "
    ...              "Please try again in 644ms.")
    >>> c.code, c.rule, c.details["retry_after"]
    ('LLM_RATE_LIMITED', 'openai:rate-limit', 0.644)

Rules are data (``_rules.BUILTIN_RULES``): provider-specific wording first, generic
wording after, the HTTP status alone only as a last resort, because status codes lie
(a quota error often arrives as 429, a timeout wrapped as 500, a bad key as 400).
User rules come from YAML (:func:`load_rules`) and may override or outrank built-ins.

The table compiles on first use, so importing errtrace stays cheap. Input is capped
(:attr:`RuleSet.max_input`, 4096 characters by default) and every pattern, built-in or
user-supplied, passes a check against nested quantifiers.
"""

from __future__ import annotations

from pathlib import Path

from errtrace.core._regex_safety import MAX_PATTERN_LENGTH, find_unsafe_construct
from errtrace.core.rewrite._engine import (
    DEFAULT_MAX_INPUT,
    Classification,
    RuleSet,
    RuleSetStats,
    check_builtin_rules,
)
from errtrace.core.rewrite._loader import RuleFileError
from errtrace.core.rewrite._rules import BUILTIN_RULES, Rule

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT_MAX_INPUT",
    "MAX_PATTERN_LENGTH",
    "Classification",
    "Rule",
    "RuleFileError",
    "RuleSet",
    "RuleSetStats",
    "check_builtin_rules",
    "classify",
    "default_ruleset",
    "find_unsafe_construct",
    "from_response",
    "load_rules",
]

default_ruleset = RuleSet()
"""The process-wide rule table used by :func:`classify`, the middlewares and adapters."""


def classify(
    text: str | bytes | object,
    *,
    status: int | None = None,
    provider: str | None = None,
) -> Classification:
    """Classify a provider/model error message into an ``LLM_*`` (or user) code.

    A serving stack's accelerator out-of-memory text gives ``AI_GPU_OUT_OF_MEMORY``.
    ``text`` may be a str, bytes (any encoding; invalid UTF-8 is replaced), an
    exception or any object (its ``str``). ``status`` is the HTTP status when known;
    ``provider`` (e.g. ``"openai"``, ``"anthropic"``) is detected from the text when
    not given. Unknown text gives ``LLM_UNKNOWN`` with the text kept; never raises.
    """
    return default_ruleset.classify(text, status=status, provider=provider)


def from_response(
    status: int,
    body: bytes | str,
    content_type: str | None = None,
    *,
    provider: str | None = None,
) -> Classification:
    """Classify an HTTP error response body (free text, HTML or JSON) with its status."""
    return default_ruleset.from_response(status, body, content_type, provider=provider)


def load_rules(path: str | Path, *, watch: bool = True) -> int:
    """Load user rules from a YAML file into the default rule table; returns their count.

    Raises :class:`RuleFileError` (naming the file, rule and field) if the file is
    invalid. With ``watch=True`` later edits are picked up on the next classification
    (checked at most once a second); an edit that does not load keeps the last good
    table, logs a warning and counts ``default_ruleset.stats.reload_failures``.
    """
    return default_ruleset.load(path, watch=watch)
