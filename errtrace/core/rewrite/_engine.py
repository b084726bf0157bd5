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

from errtrace.core._regex_safety import (
    find_unsafe_construct,
    required_literal,
    scans_quadratically,
)
from errtrace.core.codes import CodeRegistry, registry
from errtrace.core.rewrite import _extract as ex
from errtrace.core.rewrite._index import TOKEN_RE, TokenIndex, literal_first, quality
from errtrace.core.rewrite._loader import (
    RuleFileError,
    compile_user_pattern,
    load_rule_file,
    rules_from_document,
)
from errtrace.core.rewrite._rules import BUILTIN_RULES, Rule, status_code_for
from errtrace.core.stats import stats as counters

log = logging.getLogger("errtrace")

DEFAULT_MAX_INPUT = 4096
"""Characters (or bytes, for bytes input) of a message that are classified."""

QUADRATIC_REGEX_MAX_INPUT = 1024
"""Characters a pattern whose failing search is quadratic (``\\w+\\d``, ``x.*y``) examines.

:func:`~errtrace.core._regex_safety.find_unsafe_construct` refuses patterns that
backtrack worse than that; the rest still rescan a run of text from every start
position, so they see only the start of the message: a few milliseconds at most.
"""
_NO_LIMIT = 1 << 62

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


_Key = tuple[int, str, bool]
"""A literal the text is tested for: ``(index mask, text, sure)``; see :class:`TokenIndex`.

It may occur only if ``hits & mask == mask``; ``sure``: then it does."""


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    literals: tuple[_Key, ...]
    # each regex with the text it cannot match without (None: always run it) and the
    # length of text it examines
    regexes: tuple[tuple[_Key | None, re.Pattern[str], int], ...]
    needles: tuple[_Key, ...]

    def matches(self, lowered: str, hits: int) -> bool:
        """Does the rule match? ``hits`` are the index bits of ``lowered``."""
        for mask, literal, sure in self.literals:
            if (hits & mask) == mask and (sure or literal in lowered):
                return True
        if not self.regexes:
            return False
        if self.needles:
            for mask, needle, sure in self.needles:
                if (hits & mask) == mask and (sure or needle in lowered):
                    break
            else:
                return False
        for gate, regex, endpos in self.regexes:
            # a regex scan costs far more than a substring test on long input
            if gate is not None:
                mask, text, sure = gate
                if (hits & mask) != mask or not (sure or text in lowered):
                    continue
            if regex.search(lowered, 0, endpos):
                return True
        return False


@dataclass(frozen=True)
class _Table:
    """The compiled rules in the order they are tried, with the token index over them.

    Rule ``i`` owns index bit ``1 << i``: it is set when the text may satisfy the rule
    (one of its literals, or what its regexes need, may occur); only those rules run.
    """

    rules: tuple[_Compiled, ...]
    index: TokenIndex
    rule_bits: int
    # each provider with its group bit (set when one of its needles may occur)
    providers: tuple[tuple[str, int, tuple[_Key, ...]], ...]
    provider_bits: int
    status_bit: int
    # extractor name -> group bit, set when one of its gates may occur
    extractors: dict[str, int]

    def has(self, lowered: str, hits: int) -> ex.Has:
        """``key in lowered``, skipped when the index proves the key absent."""
        get = self.index.keys.get

        def has(key: str) -> bool:
            found = get(key)
            if found is None:
                return key in lowered
            mask, sure = found
            return (hits & mask) == mask and (sure or key in lowered)

        return has

    def detect_provider(self, lowered: str, hits: int) -> str | None:
        """:func:`_extract.detect_provider`, with the index."""
        if not hits & self.provider_bits:
            return None
        for provider, bit, needles in self.providers:
            if hits & bit:
                for mask, needle, sure in needles:
                    if (hits & mask) == mask and (sure or needle in lowered):
                        return provider
        return None


def _regex_part(index: TokenIndex, rule: Rule, gates: list[str | None], bit: int) -> None:
    """Set the rule's bit whenever what its regexes need may occur."""
    if not gates:
        return
    if rule.anchors:
        for token in rule.anchors:
            index.exact_token(token, bit)
        return
    choices: list[tuple[tuple[int, int], tuple[str, ...]]] = []
    if rule.needles:
        choices.append((quality(rule.needles), rule.needles))
    if all(gate is not None for gate in gates):
        gate_keys = tuple(gate for gate in gates if gate is not None)
        choices.append((quality(gate_keys), gate_keys))
    if not choices:
        index.always |= bit
        return
    score, keys = max(choices, key=lambda item: item[0])
    if score == (0, 0):
        index.always |= bit
        return
    for key in keys:
        index.add_group(key, bit)


_Entry = tuple[Rule, tuple[str, ...], tuple[tuple[str, re.Pattern[str]], ...]]
"""A rule with its plain-text patterns and its regexes (source pattern, compiled)."""


def _key(index: TokenIndex, text: str, group: int = 0) -> _Key:
    mask, sure = index.key(text, group)
    return (mask, text, sure)


def _build_table(ordered: list[_Entry]) -> _Table:
    """``ordered``: the rules in trial order."""
    index = TokenIndex(first_bit=len(ordered))
    compiled: list[_Compiled] = []
    for i, (rule, literals, regexes) in enumerate(ordered):
        bit = 1 << i
        # user patterns run case-insensitively: their gates are lower case, and leave out
        # characters case folding may spell otherwise ("i" also matches a dotless one)
        gates = [
            required_literal(source, ignorecase=bool(regex.flags & re.IGNORECASE))
            for source, regex in regexes
        ]
        compiled.append(
            _Compiled(
                rule,
                tuple(_key(index, literal, bit) for literal in literals),
                tuple(
                    (
                        None if gate is None else _key(index, gate),
                        regex,
                        QUADRATIC_REGEX_MAX_INPUT if scans_quadratically(source) else _NO_LIMIT,
                    )
                    for gate, (source, regex) in zip(gates, regexes, strict=True)
                ),
                tuple(_key(index, needle) for needle in rule.needles),
            )
        )
        _regex_part(index, rule, gates, bit)
    providers = []
    provider_bits = 0
    for provider, needles in ex.PROVIDER_NEEDLES:
        bit = index.new_bit()
        provider_bits |= bit
        providers.append((provider, bit, tuple(_key(index, needle, bit) for needle in needles)))
    extractors: dict[str, int] = {}
    for name, extractor_gates in ex.EXTRACTOR_GATES.items():
        bit = extractors[name] = index.new_bit()
        for gate_key in extractor_gates:
            index.key(gate_key, bit)
    for key in ex.GATE_KEYS:
        index.key(key)
    status_bit = index.new_bit()
    for token in ex.STATUS_TOKENS:
        index.exact_token(token, status_bit)
    return _Table(
        tuple(compiled),
        index.freeze(),
        (1 << len(ordered)) - 1,
        tuple(providers),
        provider_bits,
        status_bit,
        extractors,
    )


def _split_builtin(rule: Rule) -> _Entry:
    literals: list[str] = []
    regexes: list[tuple[str, re.Pattern[str]]] = []
    for pattern in rule.patterns:
        if _META.isdisjoint(pattern):
            literals.append(pattern)
        else:
            regexes.append((pattern, re.compile(literal_first(pattern))))
    return rule, tuple(literals), tuple(regexes)


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
        self._table: _Table | None = None
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
        return tuple(c.rule for c in self._compiled().rules)

    def _compiled(self) -> _Table:
        table = self._table
        if table is None:
            with self._lock:
                if self._table is None:
                    self._table = self._build(self._user)
                table = self._table
        return table

    def _build(self, user: list[tuple[Rule, tuple[re.Pattern[str], ...]]]) -> _Table:
        own: list[_Entry] = []
        for rule in self._extra:
            compiled = tuple(
                compile_user_pattern(p, f"rule {rule.id!r}.patterns[{i}]")
                for i, p in enumerate(rule.patterns)
            )
            own.append((rule, (), tuple((c.pattern, c) for c in compiled)))
        own.extend((rule, (), tuple((c.pattern, c) for c in compiled)) for rule, compiled in user)
        replaced = {entry[0].id for entry in own}
        builtins = [_split_builtin(r) for r in self._builtins if r.id not in replaced]
        ranked = [(-e[0].priority, 0, i, e) for i, e in enumerate(own)]
        ranked += [(-e[0].priority, 1, i, e) for i, e in enumerate(builtins)]
        ranked.sort(key=lambda item: item[:3])
        return _build_table([item[3] for item in ranked])

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
            counters.incr("rules_reload_failures")
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
        table = self._compiled()
        hits = table.index.scan(lowered)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            status = None
        named = ex.normalize_provider(provider)
        prov = named or table.detect_provider(lowered, hits)
        # the status written in the text is looked for only when something needs it
        text_status: int | None = None
        text_status_known = status is not None

        decided: Rule | None = None
        if lowered.strip():
            rules = table.rules
            # only rules whose literals or regex gates may occur in the text
            candidates = hits & table.rule_bits
            while candidates:
                lowest = candidates & -candidates
                candidates ^= lowest
                compiled = rules[lowest.bit_length() - 1]
                rule = compiled.rule
                if rule.status is not None or rule.weak:
                    if not text_status_known:
                        text_status = self._status_in_text(table, lowered, hits)
                        text_status_known = True
                    known = status if status is not None else text_status
                    if rule.status is not None and known not in rule.status:
                        continue
                    if rule.weak and known is not None:
                        # a type many failures share does not overrule a status that
                        # names another one (OpenAI's 401/403 say invalid_request_error)
                        suggested = status_code_for(known)
                        if suggested is not None and suggested != rule.code:
                            continue
                if rule.provider is not None and prov not in rule.provider:
                    continue
                if compiled.matches(lowered, hits):
                    decided = rule
                    break

        if decided is None and not text_status_known:
            text_status = self._status_in_text(table, lowered, hits)
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

        details = self._details(text, lowered, code, table, hits)
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
    def _status_in_text(table: _Table, lowered: str, hits: int) -> int | None:
        # on ASCII text every status pattern needs a whole token 400..599 (``\d`` also
        # matches other digits, so non-ASCII text is always searched)
        if not hits & table.status_bit and lowered.isascii():
            return None
        return ex.status_in_text(lowered)

    @staticmethod
    def _details(text: str, lowered: str, code: str, table: _Table, hits: int) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if not lowered:
            return details
        has = table.has(lowered, hits)
        # an extractor whose gates cannot occur finds nothing: skip it
        may = table.extractors
        envelope = ex.parse_envelope(text) if "{" in text else {}
        if (
            not envelope.get("type")
            and not envelope.get("code")
            and hits & may["fields"]
            and (has("type") or has("code"))
        ):
            envelope = {**ex.scan_envelope_fields(lowered, has), **envelope}
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
        if code == "LLM_CONTEXT_LENGTH_EXCEEDED" and hits & may["context"]:
            details.update(ex.context_numbers(lowered, has))
        retry_after = ex.retry_after_seconds(lowered, has) if hits & may["retry"] else None
        if retry_after is not None:
            details["retry_after"] = retry_after
        model = ex.model_name(lowered, text, has) if hits & may["model"] else None
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
        for token in rule.anchors:
            if not TOKEN_RE.fullmatch(token):
                problems.append(f"{rule.id}: anchor {token!r} is not one token ([a-z0-9]+)")
        for pattern in rule.patterns:
            issue = find_unsafe_construct(pattern)
            if issue:
                problems.append(f"{rule.id}: {pattern!r}: {issue}")
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"{rule.id}: {pattern!r}: {exc}")
    return problems
