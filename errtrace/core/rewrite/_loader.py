"""Reading and validating user rule files.

A rule file is YAML::

    rules:
      - id: my-gateway-quota            # unique; same id as a built-in replaces it
        code: LLM_QUOTA_EXCEEDED        # any registered code id
        patterns: ["budget exhausted for team \\\\w+"]   # case-insensitive regexes
        status: [402, 429]              # optional: int or list
        provider: [openai, azure]       # optional: str or list
        priority: 790                   # optional, default 500; built-in bands in _rules
        hint: Ask the platform team to raise the team budget.   # optional

Every error names the file, the rule (index and id) and the field, so a bad edit can
be fixed from the log line alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from errtrace.core._regex_safety import MAX_PATTERN_LENGTH, find_unsafe_construct
from errtrace.core.codes import CodeRegistry, registry
from errtrace.core.rewrite._extract import normalize_provider
from errtrace.core.rewrite._rules import Rule

USER_DEFAULT_PRIORITY = 500
"""Priority of a user rule that names none: above generic wording, below provider wording."""

MAX_RULES = 1000
MAX_PATTERNS_PER_RULE = 50
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")
_FIELDS = ("id", "code", "patterns", "status", "provider", "priority", "hint")


class RuleFileError(ValueError):
    """Raised when a rule file cannot be read or a rule in it is invalid."""


def _fail(where: str, message: str) -> RuleFileError:
    return RuleFileError(f"{where}: {message}")


def _int_list(value: Any, where: str) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _fail(where, "must be an HTTP status or a non-empty list of them")
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            raise _fail(where, f"{item!r} is not an HTTP status (an integer 100..599)")
        out.add(item)
    return frozenset(out)


def _str_list(value: Any, where: str) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _fail(where, "must be a provider name or a non-empty list of them")
    out: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise _fail(where, f"{item!r} is not a provider name (a non-empty string)")
        name = normalize_provider(item)
        if name:
            out.add(name)
    return frozenset(out)


def compile_user_pattern(pattern: str, where: str) -> re.Pattern[str]:
    """Check a user pattern for safety and compile it case-insensitively."""
    if not isinstance(pattern, str) or not pattern:
        raise _fail(where, f"{pattern!r} is not a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _fail(
            where, f"pattern is {len(pattern)} characters, over the {MAX_PATTERN_LENGTH} limit"
        )
    problem = find_unsafe_construct(pattern)
    if problem is not None:
        raise _fail(where, f"unsafe pattern {pattern!r}: {problem}")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise _fail(where, f"invalid regular expression {pattern!r}: {exc}") from None


def rule_from_mapping(
    entry: Any, where: str, *, codes: CodeRegistry | None = None, source: str = "user"
) -> tuple[Rule, tuple[re.Pattern[str], ...]]:
    """Validate one rule entry; returns the rule and its compiled patterns."""
    if not isinstance(entry, Mapping):
        raise _fail(where, f"expected a mapping, got {type(entry).__name__}")
    rule_id = entry.get("id")
    if isinstance(rule_id, str) and _ID_RE.match(rule_id):
        where = f"{where} (id {rule_id!r})"
    unknown = sorted(str(k) for k in entry if k not in _FIELDS)
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}")
    for required in ("id", "code", "patterns"):
        if required not in entry:
            raise _fail(f"{where}.{required}", "missing")
    if not isinstance(rule_id, str) or not _ID_RE.match(rule_id):
        raise _fail(f"{where}.id", f"{rule_id!r} is not a rule id (letters, digits, _ . : / -)")
    code = entry["code"]
    if not isinstance(code, str) or code not in (codes or registry):
        raise _fail(f"{where}.code", f"{code!r} is not a registered error code")
    patterns = entry["patterns"]
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not patterns:
        raise _fail(f"{where}.patterns", "must be a non-empty list of regular expressions")
    if len(patterns) > MAX_PATTERNS_PER_RULE:
        raise _fail(f"{where}.patterns", f"at most {MAX_PATTERNS_PER_RULE} patterns per rule")
    compiled = tuple(
        compile_user_pattern(p, f"{where}.patterns[{i}]") for i, p in enumerate(patterns)
    )
    status = _int_list(entry["status"], f"{where}.status") if "status" in entry else None
    provider = _str_list(entry["provider"], f"{where}.provider") if "provider" in entry else None
    priority = entry.get("priority", USER_DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _fail(f"{where}.priority", f"{priority!r} is not an integer")
    hint = entry.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise _fail(f"{where}.hint", f"{hint!r} is not a string")
    rule = Rule(
        id=rule_id,
        code=code,
        patterns=tuple(patterns),
        status=status,
        provider=provider,
        priority=priority,
        hint=hint or None,
        confidence=0.9,
        source=source,
    )
    return rule, compiled


def rules_from_document(
    data: Any, source: str, *, codes: CodeRegistry | None = None
) -> list[tuple[Rule, tuple[re.Pattern[str], ...]]]:
    """Validate a parsed rule document (``{"rules": [...]}``); all or nothing."""
    if data is None:
        data = {"rules": []}  # an empty file: no user rules
    if not isinstance(data, Mapping) or "rules" not in data:
        raise RuleFileError(f"{source}: expected a mapping with a 'rules' list")
    unknown = sorted(str(k) for k in data if k != "rules")
    if unknown:
        raise RuleFileError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    entries = data["rules"] if data["rules"] is not None else []
    if not isinstance(entries, list):
        raise RuleFileError(f"{source}: 'rules' must be a list")
    if len(entries) > MAX_RULES:
        raise RuleFileError(f"{source}: {len(entries)} rules, over the {MAX_RULES} limit")
    out: list[tuple[Rule, tuple[re.Pattern[str], ...]]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        rule, compiled = rule_from_mapping(
            entry, f"{source}: rules[{index}]", codes=codes, source=source
        )
        if rule.id in seen:
            raise RuleFileError(
                f"{source}: rules[{index}] (id {rule.id!r}).id: defined twice in the file"
            )
        seen.add(rule.id)
        out.append((rule, compiled))
    return out


def load_rule_file(
    path: str | Path, *, codes: CodeRegistry | None = None
) -> list[tuple[Rule, tuple[re.Pattern[str], ...]]]:
    """Read and validate a YAML rule file."""
    from errtrace.core._yaml import ConfigFileError, load_yaml_file

    try:
        data = load_yaml_file(path)
    except ConfigFileError as exc:
        raise RuleFileError(str(exc)) from exc
    return rules_from_document(data, str(path), codes=codes)
