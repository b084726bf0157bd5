"""The classifier: :class:`RuleSet` holds the active table and decides."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from errtrace.core.codes import CodeRegistry, registry
from errtrace.core.rewrite import _extract as ex
from errtrace.core.rewrite._loader import (
    RuleFileError,
    compile_user_pattern,
    load_rule_file,
    rules_from_document,
)
from errtrace.core.rewrite._rules import BUILTIN_RULES, Rule, status_code_for
from errtrace.core.rewrite._safety import find_unsafe_construct, required_literal

log = logging.getLogger("errtrace")

DEFAULT_MAX_INPUT = 4096
"""Characters (or bytes, for bytes input) of a message that are classified."""

STATUS_ONLY_CONFIDENCE = 0.5
STATUS_IN_TEXT_CONFIDENCE = 0.4
_META = frozenset("\\.^$*+?{}[]|()")
UNKNOWN_CODE = "LLM_UNKNOWN"


@dataclass(frozen=True)
class Classification:
    """The decision for one message.

    ``rule`` names what decided: a rule id such as ``openai:rate-limit``,
    ``status-only:429`` when only the HTTP status was usable, ``status-in-text:503``
    when only a status written in the text was, or ``fallback:unknown``.
    """

    code: str
    hint: str
    confidence: float
    rule: str
    details: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    provider: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the decision (``text`` included)."""
        return {
            "code": self.code,
            "confidence": self.confidence,
            "rule": self.rule,
            "hint": self.hint,
            "provider": self.provider,
            "details": dict(self.details),
            "text": self.text,
        }


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    literals: tuple[str, ...]
    # each regex with the text it cannot match without (None: always run it)
    regexes: tuple[tuple[str | None, re.Pattern[str]], ...]
    needles: tuple[str, ...]

    def matches(self, lowered: str) -> bool:
        for literal in self.literals:
            if literal in lowered:
                return True
        if not self.regexes:
            return False
        if self.needles:
            for needle in self.needles:
                if needle in lowered:
                    break
            else:
                return False
        for gate, regex in self.regexes:
            # a regex scan costs far more than a substring test on long input
            if (gate is None or gate in lowered) and regex.search(lowered):
                return True
        return False


def _gated(regexes: Iterable[re.Pattern[str]]) -> tuple[tuple[str | None, re.Pattern[str]], ...]:
    out = []
    for regex in regexes:
        gate = required_literal(regex.pattern)
        out.append((gate.lower() if gate else None, regex))
    return tuple(out)


def _compile_builtin(rule: Rule) -> _Compiled:
    literals: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for pattern in rule.patterns:
        if _META.isdisjoint(pattern):
            literals.append(pattern)
        else:
            regexes.append(re.compile(pattern))
    return _Compiled(rule, tuple(literals), _gated(regexes), rule.needles)


@dataclass
class RuleSetStats:
    """Counters of a :class:`RuleSet`'s rule-file loads."""

    loads: int = 0
    reload_failures: int = 0
    last_error: str | None = None
    path: str | None = None
    user_rules: int = 0


class RuleSet:
    """The active rule table: built-ins plus user rules, compiled once on first use.

    A user rule with the id of a built-in replaces it. Rules are tried by descending
    priority; at equal priority user rules come first, then table order.
    """

    def __init__(
        self,
        rules: Iterable[Rule] | None = None,
        *,
        builtins: bool = True,
        max_input: int = DEFAULT_MAX_INPUT,
        check_interval: float = 1.0,
        codes: CodeRegistry | None = None,
    ) -> None:
        self.max_input = max_input
        self.check_interval = check_interval
        self._codes = codes
        self._builtins: tuple[Rule, ...] = BUILTIN_RULES if builtins else ()
        self._extra: tuple[Rule, ...] = tuple(rules or ())
        self._user: list[tuple[Rule, tuple[re.Pattern[str], ...]]] = []
        self._table: tuple[_Compiled, ...] | None = None
        self._lock = threading.Lock()
        self._stats = RuleSetStats()
        self._watch_path: Path | None = None
        self._signature: tuple[int, int] | None = None
        self._last_check = 0.0

    # ------------------------------------------------------------ the table

    @property
    def stats(self) -> RuleSetStats:
        """A snapshot of the load counters."""
        s = self._stats
        return RuleSetStats(s.loads, s.reload_failures, s.last_error, s.path, s.user_rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The active rules in the order they are tried."""
        return tuple(c.rule for c in self._compiled())

    def _compiled(self) -> tuple[_Compiled, ...]:
        table = self._table
        if table is None:
            with self._lock:
                if self._table is None:
                    self._table = self._build(self._user)
                table = self._table
        return table

    def _build(self, user: list[tuple[Rule, tuple[re.Pattern[str], ...]]]) -> tuple[_Compiled, ...]:
        own: list[_Compiled] = []
        for rule in self._extra:
            compiled = tuple(
                compile_user_pattern(p, f"rule {rule.id!r}.patterns[{i}]")
                for i, p in enumerate(rule.patterns)
            )
            own.append(_Compiled(rule, (), _gated(compiled), rule.needles))
        own.extend(_Compiled(rule, (), _gated(compiled), ()) for rule, compiled in user)
        replaced = {c.rule.id for c in own}
        builtins = [_compile_builtin(r) for r in self._builtins if r.id not in replaced]
        ranked = [(-c.rule.priority, 0, i, c) for i, c in enumerate(own)]
        ranked += [(-c.rule.priority, 1, i, c) for i, c in enumerate(builtins)]
        ranked.sort(key=lambda item: item[:3])
        return tuple(item[3] for item in ranked)

    def set_user_rules(self, data: Mapping[str, Any] | None, source: str = "<rules>") -> int:
        """Replace the user rules with those of a parsed ``{"rules": [...]}`` document."""
        user = rules_from_document(data, source, codes=self._codes)
        table = self._build(user)
        with self._lock:
            self._user, self._table = user, table
            self._stats.user_rules = len(user)
        return len(user)

    def load(self, path: str | Path, *, watch: bool = True) -> int:
        """Load user rules from a YAML file (raising :class:`RuleFileError` if invalid).

        With ``watch=True`` the file is checked again (a ``stat``) at most every
        ``check_interval`` seconds on classification, and reloaded when its mtime or
        size changed; see :meth:`reload_if_changed`.
        """
        p = Path(path)
        signature = self._stat(p)
        user = load_rule_file(p, codes=self._codes)
        table = self._build(user)
        with self._lock:
            self._user, self._table = user, table
            self._stats.loads += 1
            self._stats.path = str(p)
            self._stats.user_rules = len(user)
            self._watch_path = p if watch else None
            self._signature = signature
            self._last_check = time.monotonic()
        return len(user)

    def unwatch(self) -> None:
        """Stop checking the rule file for changes (the loaded rules stay)."""
        self._watch_path = None

    @staticmethod
    def _stat(path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload_if_changed(self) -> bool:
        """Reload the watched file if it changed; True when a new table is in force.

        A file that no longer loads (bad YAML, an invalid rule, deleted) leaves the
        last good table in force, logs a warning on the ``errtrace`` logger and
        counts a reload failure; the same broken version is not retried.
        """
        path = self._watch_path
        if path is None:
            return False
        signature = self._stat(path)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            if signature is None:
                raise RuleFileError(f"{path}: cannot read: file is missing")
            user = load_rule_file(path, codes=self._codes)
            table = self._build(user)
        except Exception as exc:  # any failure must keep the last good table
            with self._lock:
                self._stats.reload_failures += 1
                self._stats.last_error = str(exc)
            log.warning("errtrace: rule file reload failed, keeping the previous rules: %s", exc)
            return False
        with self._lock:
            self._user, self._table = user, table
            self._stats.loads += 1
            self._stats.user_rules = len(user)
            self._stats.last_error = None
        log.info("errtrace: reloaded %d rule(s) from %s", len(user), path)
        return True

    def _maybe_reload(self) -> None:
        if self._watch_path is None:
            return
        now = time.monotonic()
        if now - self._last_check < self.check_interval:
            return
        self._last_check = now
        self.reload_if_changed()

    # ------------------------------------------------------------ deciding

    def classify(
        self,
        text: str | bytes | object,
        *,
        status: int | None = None,
        provider: str | None = None,
    ) -> Classification:
        """Classify one provider/model error message; never raises."""
        try:
            return self._classify(text, status, provider)
        except Exception as exc:  # a classifier bug must not become a second failure
            log.exception("errtrace: classifier failed; answering LLM_UNKNOWN")
            safe = ex.to_text(text, self.max_input) if not isinstance(exc, MemoryError) else ""
            return Classification(
                UNKNOWN_CODE,
                self._hint(UNKNOWN_CODE, None),
                0.0,
                "fallback:error",
                {},
                safe,
                None,
            )

    def _hint(self, code: str, rule: Rule | None) -> str:
        if rule is not None and rule.hint:
            return rule.hint
        found = (self._codes or registry).find(code)
        return found.hint if found is not None else ""

    def _classify(self, value: object, status: int | None, provider: str | None) -> Classification:
        self._maybe_reload()
        text = ex.to_text(value, self.max_input)
        lowered = text.lower()
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            status = None
        named = ex.normalize_provider(provider)
        prov = named or ex.detect_provider(lowered)
        # the status written in the text is looked for only when something needs it
        text_status: int | None = None
        text_status_known = status is not None

        decided: Rule | None = None
        if lowered.strip():
            for compiled in self._compiled():
                rule = compiled.rule
                if rule.status is not None:
                    if not text_status_known:
                        text_status, text_status_known = ex.status_in_text(lowered), True
                    if (status if status is not None else text_status) not in rule.status:
                        continue
                if rule.provider is not None and prov not in rule.provider:
                    continue
                if compiled.matches(lowered):
                    decided = rule
                    break

        if decided is None and not text_status_known:
            text_status = ex.status_in_text(lowered)
        if decided is not None:
            code, rule_id, confidence = decided.code, decided.id, decided.confidence
        elif status is not None and status_code_for(status):
            # status codes lie (quota as 429, timeouts wrapped as 500): weak evidence
            code, rule_id = status_code_for(status) or UNKNOWN_CODE, f"status-only:{status}"
            confidence = STATUS_ONLY_CONFIDENCE
        elif text_status is not None and status_code_for(text_status):
            code = status_code_for(text_status) or UNKNOWN_CODE
            rule_id, confidence = f"status-in-text:{text_status}", STATUS_IN_TEXT_CONFIDENCE
        else:
            code, rule_id, confidence = UNKNOWN_CODE, "fallback:unknown", 0.0

        details = self._details(text, lowered, code)
        if text_status is not None and decided is None:
            details["status"] = text_status
        return Classification(
            code=code,
            hint=self._hint(code, decided),
            confidence=confidence,
            rule=rule_id,
            details=details,
            text=text,
            provider=prov,
        )

    @staticmethod
    def _details(text: str, lowered: str, code: str) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if not lowered:
            return details
        envelope = ex.parse_envelope(text) if "{" in text else {}
        if (
            not envelope.get("type")
            and not envelope.get("code")
            and ("type" in lowered or "code" in lowered)
        ):
            envelope = {**ex.scan_envelope_fields(lowered), **envelope}
        error_type = envelope.get("type")
        if error_type:
            details["provider_error_type"] = error_type
        error_code = envelope.get("code")
        if error_code is None or error_code.isdigit():
            error_code = (
                envelope.get("status") if not (envelope.get("status") or "").isdigit() else None
            )
        if error_code:
            details["provider_error_code"] = error_code
        if code == "LLM_CONTEXT_LENGTH_EXCEEDED":
            details.update(ex.context_numbers(lowered))
        retry_after = ex.retry_after_seconds(lowered)
        if retry_after is not None:
            details["retry_after"] = retry_after
        model = ex.model_name(lowered, text)
        if model:
            details["model"] = model
        return details

    def from_response(
        self,
        status: int,
        body: bytes | str,
        content_type: str | None = None,
        *,
        provider: str | None = None,
    ) -> Classification:
        """Classify an HTTP error response body (free text, HTML or JSON) with its status."""
        text = ex.to_text(body, self.max_input)
        if content_type and "html" in content_type.lower():
            # gateway error pages: the words matter, the markup does not
            text = _TAGS.sub(" ", text)
        return self.classify(text, status=status, provider=provider)


_TAGS = re.compile(r"<[^<>]{0,300}>")


def check_builtin_rules() -> list[str]:
    """Problems in the built-in table (unsafe or invalid patterns, unknown codes)."""
    problems: list[str] = []
    for rule in BUILTIN_RULES:
        if rule.code not in registry:
            problems.append(f"{rule.id}: unknown code {rule.code}")
        for pattern in rule.patterns:
            issue = find_unsafe_construct(pattern)
            if issue:
                problems.append(f"{rule.id}: {pattern!r}: {issue}")
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"{rule.id}: {pattern!r}: {exc}")
    return problems
