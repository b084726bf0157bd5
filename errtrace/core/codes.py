"""Semantic error codes: :class:`ErrorCode`, the :class:`CodeRegistry` and the built-in catalog.

Code ids are UPPER_SNAKE_CASE and at most 63 characters, the AIP-193 rule for
``google.rpc.ErrorInfo.reason``, so that every id can travel as a gRPC reason unchanged.
The built-in ids are public contract (see CODES.md in the design documents).
"""

from __future__ import annotations

import re
import reprlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from errtrace.core.levels import Level
from errtrace.core.status import GRPC_CODES, http_to_grpc

CODE_ID_RE = re.compile(r"[A-Z][A-Z0-9_]{0,62}\Z")  # \Z: "$" would accept a final newline
_ACTION_RE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")  # a fallback action name: fallback_model
DEFAULT_DOMAIN = "errtrace.dev"


class CodeDefinitionError(ValueError):
    """Raised when a code definition is invalid or duplicates a registered one."""


_SHOWN_MAX = 80
"""At most this many characters of a bad value are echoed in an error message."""

_REPR = reprlib.Repr()  # walks a bounded part of a nested value: YAML aliases can nest deep
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = _SHOWN_MAX


def short_repr(value: object) -> str:
    """``repr(value)`` for an error message: one line of at most about 80 characters.

    A bad value is echoed to help find it, not to be copied whole: a 1 MB value would
    drown the message, and a raw newline would split it into several log lines (repr
    escapes control characters). A longer repr is cut and ends with ``...``, followed by
    the length of a string. Used by every message of the config and the code registry
    that echoes a value.
    """
    if isinstance(value, str):
        text = repr(value[: _SHOWN_MAX + 1])  # never the repr of the whole string
    else:
        try:
            text = _REPR.repr(value)
        except Exception:  # e.g. an int past sys.get_int_max_str_digits()
            text = f"<{type(value).__name__!r} object whose repr failed>"
    if len(text) <= _SHOWN_MAX:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: _SHOWN_MAX - 3]}...{size}"


def _usable_id(value: object) -> str | None:
    """``value`` if it is a valid code id, to name an entry by; else None.

    An invalid id is not used as a name: it may be huge or hold a newline, and its own
    error message already shows it.
    """
    return value if isinstance(value, str) and CODE_ID_RE.match(value) else None


@dataclass(frozen=True)
class ErrorCode:
    """One semantic error code and what it maps to.

    ``http_status``/``grpc_status`` default from the level when left ``None`` for a
    failing level (0-3); levels 4-6 never fail a request and have no status.
    ``fallback`` names the default fallback action (lower_snake_case of at most 64
    characters, such as ``fallback_model``) or is ``None``; ``extra`` is a mapping.
    ``domain`` becomes ``google.rpc.ErrorInfo.domain``: it must not be empty nor start or
    end with whitespace. An invalid field raises :class:`CodeDefinitionError` whose
    message starts with the field's name.
    """

    id: str
    level: Level
    http_status: int | None = None
    grpc_status: str | None = None
    retryable: bool = False
    hint: str = ""
    title: str = ""
    domain: str = DEFAULT_DOMAIN
    fallback: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not CODE_ID_RE.match(self.id):
            raise CodeDefinitionError(
                f"id: {short_repr(self.id)} is not UPPER_SNAKE_CASE of at most 63 characters"
            )
        try:
            level = Level.parse(self.level)
        except ValueError:  # Level.parse's own message echoes the whole value
            names = ", ".join(lvl.name.lower() for lvl in Level)
            raise CodeDefinitionError(
                f"level: {short_repr(self.level)} is not a level (0..6 or one of {names})"
            ) from None
        object.__setattr__(self, "level", level)
        if self.http_status is not None and (
            isinstance(self.http_status, bool) or not isinstance(self.http_status, int)
        ):
            raise CodeDefinitionError(
                f"http_status: {short_repr(self.http_status)} is not an integer"
            )
        if level.fails_request:
            if self.http_status is None:
                object.__setattr__(self, "http_status", level.info.http_status)
            if self.grpc_status is None:
                assert self.http_status is not None
                object.__setattr__(self, "grpc_status", http_to_grpc(self.http_status))
        if self.http_status is not None and (
            isinstance(self.http_status, bool)
            or not isinstance(self.http_status, int)
            or not 400 <= self.http_status <= 599
        ):
            raise CodeDefinitionError(
                f"http_status: {short_repr(self.http_status)} is not an error status (400..599)"
            )
        if self.grpc_status is not None and self.grpc_status not in GRPC_CODES:
            raise CodeDefinitionError(
                f"grpc_status: {short_repr(self.grpc_status)} is not a gRPC status name "
                f"(one of {', '.join(GRPC_CODES)})"
            )
        if self.grpc_status == "OK":
            raise CodeDefinitionError("grpc_status: OK is not an error status")
        if not isinstance(self.retryable, bool):
            raise CodeDefinitionError(f"retryable: {short_repr(self.retryable)} is not true/false")
        for name in ("hint", "title", "domain"):
            if not isinstance(getattr(self, name), str):
                raise CodeDefinitionError(f"{name}: must be a string")
        if not self.domain.strip():  # google.rpc.ErrorInfo.domain must not be empty
            raise CodeDefinitionError(
                "domain: must be a non-empty string (it is the ErrorInfo domain of gRPC errors)"
            )
        if self.domain != self.domain.strip():  # clients compare domains exactly: " llm " != "llm"
            raise CodeDefinitionError(
                f"domain: {short_repr(self.domain)} has leading or trailing whitespace "
                "(it is the ErrorInfo domain of gRPC errors)"
            )
        if self.fallback is not None and (
            not isinstance(self.fallback, str) or not _ACTION_RE.match(self.fallback)
        ):
            raise CodeDefinitionError(
                f"fallback: {short_repr(self.fallback)} is not an action name "
                "(lower_snake_case of at most 64 characters, such as fallback_model)"
            )
        if not isinstance(self.extra, Mapping):
            raise CodeDefinitionError(f"extra: {short_repr(self.extra)} is not a mapping")
        if not self.title:
            object.__setattr__(self, "title", _title(self.id))

    @property
    def kind(self) -> str:
        """``transient`` (retryable), ``system`` (levels 0-2) or ``business`` (3 and up)."""
        if self.retryable:
            return "transient"
        return "system" if self.level <= Level.SEVERE else "business"

    def with_overrides(self, **changes: Any) -> ErrorCode:
        """A copy of this code with some fields changed (validated again)."""
        return replace(self, **changes)


_ACRONYMS = frozenset({"AI", "LLM", "GPU", "API", "ID", "HTTP", "URL", "JSON"})


def _title(code_id: str) -> str:
    words = [w if w in _ACRONYMS else w.lower() for w in code_id.split("_")]
    if words and words[0] not in _ACRONYMS:
        words[0] = words[0].capitalize()
    return " ".join(words)


_FIELDS = (
    "id", "level", "http_status", "grpc_status", "retryable", "hint", "title", "domain",
    "fallback",
)


def code_from_mapping(data: Mapping[str, Any], where: str = "code") -> ErrorCode:
    """Build an :class:`ErrorCode` from a mapping, naming ``where`` in every error."""
    if not isinstance(data, Mapping):
        raise CodeDefinitionError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS) - {"override"}, key=str)  # keys of any type
    if unknown:
        raise CodeDefinitionError(
            f"{where}: unknown field(s) {', '.join(map(short_repr, unknown[:5]))}"
            f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}; "
            f"allowed: {', '.join(_FIELDS)}, override"
        )
    for required in ("id", "level"):
        if required not in data:
            raise CodeDefinitionError(f"{where}.{required}: missing")
    kwargs = {name: data[name] for name in _FIELDS if name in data}
    try:
        return ErrorCode(**kwargs)
    except CodeDefinitionError as exc:
        raise CodeDefinitionError(f"{where}.{exc}") from None
    except TypeError as exc:  # a field of the wrong type reached dataclass machinery
        raise CodeDefinitionError(f"{where}: {exc}") from None


class CodeRegistry:
    """A thread-safe table of :class:`ErrorCode` by id.

    Registering an id twice fails unless ``replace=True`` is given, so that two
    modules cannot silently disagree on what a code means.
    """

    def __init__(self, codes: Iterator[ErrorCode] | list[ErrorCode] | None = None) -> None:
        self._codes: dict[str, ErrorCode] = {}
        self._lock = threading.Lock()
        for code in codes or ():
            self.register(code)

    def register(self, code: ErrorCode, *, replace: bool = False) -> ErrorCode:
        """Add ``code``; with ``replace=True`` an existing definition is overridden."""
        if not isinstance(code, ErrorCode):
            raise TypeError(f"expected ErrorCode, got {type(code).__name__}")
        with self._lock:
            if not replace and code.id in self._codes:
                raise CodeDefinitionError(
                    f"code {code.id} is already registered; pass replace=True to override it"
                )
            self._codes[code.id] = code
        return code

    def define(self, id: str, level: Level | int | str, **fields: Any) -> ErrorCode:
        """Shorthand: build an :class:`ErrorCode` and register it."""
        replace_existing = bool(fields.pop("replace", False))
        code = code_from_mapping({"id": id, "level": level, **fields}, _usable_id(id) or "code")
        return self.register(code, replace=replace_existing)

    def get(self, code_id: str) -> ErrorCode:
        """The code of that id; raises KeyError naming the id when it is unknown."""
        try:
            return self._codes[code_id]
        except KeyError:
            raise KeyError(f"unknown error code {code_id!r}") from None

    def find(self, code_id: str) -> ErrorCode | None:
        """The code of that id, or None."""
        return self._codes.get(code_id)

    def __contains__(self, code_id: object) -> bool:
        return code_id in self._codes

    def __iter__(self) -> Iterator[ErrorCode]:
        return iter(list(self._codes.values()))

    def __len__(self) -> int:
        return len(self._codes)

    def load_mapping(self, data: Any, source: str = "<mapping>") -> list[ErrorCode]:
        """Register the codes of a ``{"codes": [...]}`` document; all or nothing."""
        if not isinstance(data, Mapping) or "codes" not in data:
            raise CodeDefinitionError(f"{source}: expected a mapping with a 'codes' list")
        unknown = sorted(set(data) - {"codes"}, key=str)
        if unknown:
            raise CodeDefinitionError(f"{source}: unknown top-level key(s) {short_repr(unknown)}")
        entries = data["codes"]
        if not isinstance(entries, list):
            raise CodeDefinitionError(f"{source}: 'codes' must be a list")
        parsed: list[tuple[ErrorCode, bool]] = []
        seen: dict[str, int] = {}  # id -> index of the entry that defined it
        for index, entry in enumerate(entries):
            # "codes[1] (MODEL_GONE)": the position always (the id may be the bad field),
            # and the id when it is a valid one.
            code_id = _usable_id(entry.get("id")) if isinstance(entry, Mapping) else None
            where = f"{source}: codes[{index}]" + (f" ({code_id})" if code_id else "")
            code = code_from_mapping(entry, where)
            override = entry.get("override", False)
            if not isinstance(override, bool):
                raise CodeDefinitionError(
                    f"{where}.override: {short_repr(override)} is not true or false"
                )
            if code.id in seen:
                raise CodeDefinitionError(
                    f"{where}.id: {code.id} is defined twice in the file, "
                    f"first at codes[{seen[code.id]}]"
                )
            if code.id in self._codes and not override:
                raise CodeDefinitionError(
                    f"{where}.id: {code.id} is already registered; set 'override: true' "
                    "to change it"
                )
            seen[code.id] = index
            parsed.append((code, override))
        for code, override in parsed:
            self.register(code, replace=override)
        return [code for code, _ in parsed]

    def load_yaml(self, path: str | Path) -> list[ErrorCode]:
        """Register the codes of a YAML file (see the README, section "Codes")."""
        from errtrace.core._yaml import load_yaml_file

        return self.load_mapping(load_yaml_file(path), source=str(path))


def _c(
    id: str, level: int, http: int | None, grpc: str | None, retry: bool, hint: str,
    fallback: str | None = None,
) -> ErrorCode:
    return ErrorCode(
        id=id, level=Level(level), http_status=http, grpc_status=grpc, retryable=retry,
        hint=hint, fallback=fallback,
    )


BUILTIN_CODES: tuple[ErrorCode, ...] = (
    # Generic
    _c("INTERNAL", 1, 500, "INTERNAL", False,
       "An unexpected server error occurred; look up the event id in the server logs."),
    _c("VALIDATION_FAILED", 3, 422, "INVALID_ARGUMENT", False,
       "Fix the listed fields of the request and send it again."),
    _c("BAD_REQUEST", 3, 400, "INVALID_ARGUMENT", False,
       "The request is malformed; check its syntax and parameters."),
    _c("UNAUTHENTICATED", 3, 401, "UNAUTHENTICATED", False,
       "Send valid credentials with the request."),
    _c("PERMISSION_DENIED", 3, 403, "PERMISSION_DENIED", False,
       "The caller is not allowed to do this; request access or use another account."),
    _c("NOT_FOUND", 3, 404, "NOT_FOUND", False,
       "Check the path or the resource id; nothing exists there."),
    _c("CONFLICT", 3, 409, "ABORTED", False,
       "The resource changed meanwhile; reload it and apply the change again."),
    _c("PAYLOAD_TOO_LARGE", 3, 413, "INVALID_ARGUMENT", False,
       "Send a smaller body, or split the request."),
    _c("RATE_LIMITED", 2, 429, "RESOURCE_EXHAUSTED", True,
       "Too many requests; wait for the Retry-After interval before retrying.", "retry"),
    _c("CIRCUIT_OPEN", 2, 503, "UNAVAILABLE", True,
       "A dependency is failing and calls to it are paused; retry later.", "retry"),
    _c("TIMEOUT", 2, 504, "DEADLINE_EXCEEDED", True,
       "The operation ran past its deadline; retry, or allow a longer deadline.", "retry"),
    _c("UPSTREAM_UNAVAILABLE", 2, 503, "UNAVAILABLE", True,
       "A dependency could not be reached; retry with backoff.", "retry"),
    _c("UPSTREAM_ERROR", 2, 502, "UNAVAILABLE", True,
       "A dependency answered with an error; retry with backoff, then check it.", "retry"),
    _c("CANCELLED", 5, 499, "CANCELLED", False,
       "The client cancelled the request before it completed; nothing to do."),
    _c("NOT_IMPLEMENTED", 3, 501, "UNIMPLEMENTED", False,
       "This method is not implemented by the server."),
    # AI serving
    _c("AI_PROCESS_UNSAFE", 0, 500, "INTERNAL", False,
       "The serving process hit an unrecoverable fault; restart it and drain its traffic.",
       "exit"),
    _c("AI_MODEL_LOAD_FAILED", 1, 503, "UNAVAILABLE", False,
       "The model weights failed to load; switch to the fallback model and check storage.",
       "fallback_model"),
    _c("AI_GPU_OUT_OF_MEMORY", 1, 503, "RESOURCE_EXHAUSTED", True,
       "Accelerator memory is exhausted; lower the batch size or sequence length, or retry.",
       "reduce_batch"),
    _c("AI_RUNTIME_INIT_FAILED", 2, 503, "UNAVAILABLE", True,
       "The inference runtime failed to start; retry the initialisation.", "retry"),
    _c("AI_INFERENCE_TIMEOUT", 2, 504, "DEADLINE_EXCEEDED", True,
       "Inference ran past its deadline; retry with a shorter input or a longer deadline.",
       "retry"),
    _c("AI_COORDINATION_LOST", 2, 503, "UNAVAILABLE", True,
       "Distributed workers lost synchronisation; retry once the group has re-formed.",
       "retry"),
    _c("AI_EMBEDDING_FAILED", 2, 503, "UNAVAILABLE", True,
       "The embedding step failed; fall back to keyword search.", "keyword_search"),
    _c("AI_VECTOR_INDEX_UNAVAILABLE", 2, 503, "UNAVAILABLE", True,
       "The vector index is unreachable; fall back to lexical search.", "lexical_search"),
    _c("AI_TENSOR_SHAPE_MISMATCH", 3, 400, "INVALID_ARGUMENT", False,
       "The input tensor's dimensions do not match the model; reshape or pad the input."),
    _c("AI_PROMPT_TEMPLATE_VAR_MISSING", 3, 400, "INVALID_ARGUMENT", False,
       "Supply every variable the prompt template uses, or use the default template.",
       "default_template"),
    _c("AI_POLICY_REJECTED", 3, 403, "PERMISSION_DENIED", False,
       "A policy refused this request; change the request or ask for an exception."),
    _c("AI_COMPLIANCE_CHECK_FAILED", 3, 451, "FAILED_PRECONDITION", False,
       "A compliance check stopped the request; it cannot be served as sent."),
    _c("AI_LATENCY_DEGRADED", 4, None, None, False,
       "Latency is above its threshold; check load and the slowest dependency."),
    _c("AI_CACHE_MISS", 5, None, None, False, "Expected cache miss; no action needed."),
    _c("AI_COLD_START", 5, None, None, False, "Warm-up finished; no action needed."),
    # LLM provider and model errors
    _c("LLM_CONTEXT_LENGTH_EXCEEDED", 3, 400, "INVALID_ARGUMENT", False,
       "Shorten the prompt or history, lower max_tokens, or route to a model with a "
       "larger context window.", "larger_context_model"),
    _c("LLM_RATE_LIMITED", 2, 429, "RESOURCE_EXHAUSTED", True,
       "The provider's rate limit was hit; wait for its retry-after interval, then retry.",
       "retry"),
    _c("LLM_QUOTA_EXCEEDED", 1, 429, "RESOURCE_EXHAUSTED", False,
       "The provider quota or credit is exhausted; raise the quota or top up billing, "
       "retrying will not help.", "fallback_provider"),
    _c("LLM_AUTH_FAILED", 1, 502, "UNAVAILABLE", False,
       "The provider rejected this service's API key; rotate or fix the key.",
       "fallback_provider"),
    _c("LLM_PERMISSION_DENIED", 1, 502, "UNAVAILABLE", False,
       "The key is valid but may not use this model, region or organisation; grant access.",
       "fallback_model"),
    _c("LLM_MODEL_NOT_FOUND", 1, 502, "UNAVAILABLE", False,
       "The model or deployment name does not exist or is not available; check the name.",
       "fallback_model"),
    _c("LLM_CONTENT_FILTERED", 3, 422, "FAILED_PRECONDITION", False,
       "The provider's content policy blocked the input or output; rephrase the request."),
    _c("LLM_INVALID_REQUEST", 3, 400, "INVALID_ARGUMENT", False,
       "The provider rejected the request's parameters or payload; fix them before retrying."),
    _c("LLM_TIMEOUT", 2, 504, "DEADLINE_EXCEEDED", True,
       "The provider call timed out; retry, stream the response, or raise the timeout.",
       "retry"),
    _c("LLM_OVERLOADED", 2, 503, "UNAVAILABLE", True,
       "The provider is overloaded; retry with backoff or route to another provider.",
       "retry"),
    _c("LLM_SERVER_ERROR", 2, 502, "UNAVAILABLE", True,
       "The provider had an internal error; retry with backoff.", "retry"),
    _c("LLM_CONNECTION_ERROR", 2, 502, "UNAVAILABLE", True,
       "The provider could not be reached; check the network and retry.", "retry"),
    _c("LLM_OUTPUT_PARSE_ERROR", 3, 502, "INTERNAL", True,
       "The model's output did not parse or match the schema; retry or tighten the "
       "output instructions.", "retry"),
    _c("LLM_TOOL_ERROR", 3, 502, "INTERNAL", False,
       "A tool the model called failed or does not exist; check the tool definitions."),
    _c("LLM_UNKNOWN", 2, 502, "UNKNOWN", False,
       "An unrecognised LLM failure; the original text is kept in the event for review."),
)

registry = CodeRegistry(list(BUILTIN_CODES))
"""The process-wide registry holding the built-in catalog and user codes."""
