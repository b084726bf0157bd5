"""Turning what callers hand us into text, and pulling facts out of that text.

Everything here is bounded: inputs are capped before any parsing, JSON is parsed with
``json.loads`` and Python-literal envelopes (SDK exception reprs) with
``ast.literal_eval`` on a bounded substring only, never ``eval``.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from errtrace.core._regex_safety import required_literal
from errtrace.core.rewrite._index import literal_first

Has = Callable[[str], bool]
"""``has(key)``: does the text contain ``key``? (``key in lowered``, or a faster
equivalent from the engine's token index.)"""

LITERAL_EVAL_LIMIT = 2048
"""Longest ``{...}`` substring handed to ``ast.literal_eval`` (it builds an AST)."""

_ELLIPSIS = "\n...\n"


def to_text(value: object, limit: int) -> str:
    """Any input as a string of at most about ``limit`` characters; never raises.

    Over-long text keeps its head and its tail: an SDK message leads with the
    provider's error, while a Python traceback ends with the exception line.
    """
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[: limit * 4]) if not isinstance(value, memoryview) else value.tobytes()
        text = raw.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    elif isinstance(value, BaseException):
        try:
            message = str(value)
        except Exception:
            message = ""
        text = f"{type(value).__module__}.{type(value).__qualname__}: {message}"
    else:
        try:
            text = str(value)
        except Exception:
            try:
                text = repr(value)
            except Exception:
                text = ""
    if len(text) > limit:
        tail = limit // 4
        text = text[: limit - tail - len(_ELLIPSIS)] + _ELLIPSIS + text[-tail:]
    return text


# ---------------------------------------------------------------- envelopes


# a one-line Python string literal, prefix letters left out (as Python's tokenizer reads it)
_PY_STRING = re.compile(r"'[^'\\\n]*(?:\\[\s\S][^'\\\n]*)*'" r'|"[^"\\\n]*(?:\\[\s\S][^"\\\n]*)*"')
_PY_KEYWORDS = re.compile(r"None|True|False|set\s*\(\s*\)")
# outside its strings a literal has digits, brackets, punctuation, number letters
# (0x1f, 0o7, 0b1, 1e5, 2j, 1_0), string prefixes (r, b, u, f) and the keywords above
_NOT_IN_LITERAL = re.compile(r"[g-iklmnpqstvwyzG-IK-NPQSTVWYZ\x80-\U0010ffff]")


def _may_be_literal(candidate: str) -> bool:
    """False only if ``ast.literal_eval(candidate)`` must fail (parsing it costs more).

    With its strings removed, a valid literal keeps no letter outside the few listed.
    Triple-quoted strings and comments are not modelled: then the answer is True.
    """
    if "'''" in candidate or '"""' in candidate:
        return True
    outside = _PY_STRING.sub(" ", candidate)
    if "#" in outside or not _NOT_IN_LITERAL.search(outside):
        return True
    return not _NOT_IN_LITERAL.search(_PY_KEYWORDS.sub(" ", outside))


# A Python repr's tokens that differ from JSON: quoted strings and the three keywords.
_PY_TOKEN = re.compile(r"""'[^'\n]*'|"[^"\n]*"|\b(?:None|True|False)\b""")
_PY_KEYWORDS_JSON = {"None": "null", "True": "true", "False": "false"}


def _py_token_as_json(match: re.Match[str]) -> str:
    token = match.group(0)
    if token[0] in "'\"":
        return json.dumps(token[1:-1])
    return _PY_KEYWORDS_JSON[token]


def _load_py_repr(candidate: str) -> Any:
    """An SDK's Python repr (``{'error': {'type': ..., 'param': None}}``) via ``json``.

    Without backslashes a quoted Python string is its own content, so rewriting the
    strings and ``None``/``True``/``False`` gives JSON for the common envelope at a
    fraction of ``ast.literal_eval``'s cost. Anything else (escapes, tuples, numbers
    JSON lacks) does not parse here and is left to ``literal_eval``.
    """
    if "\\" in candidate:
        return None
    try:
        return json.loads(_PY_TOKEN.sub(_py_token_as_json, candidate))
    except (ValueError, RecursionError):
        return None


def _load(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):
        pass
    if len(candidate) <= LITERAL_EVAL_LIMIT and _may_be_literal(candidate):
        found = _load_py_repr(candidate)
        if found is not None:
            return found
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return None


def _find_envelope(text: str) -> Any:
    """The first JSON or Python-literal object in ``text``, or None.

    Tries the span from the first ``{`` to the last ``}``, then (text after the
    envelope may hold braces too, e.g. a traceback) to the ``}`` before that.
    """
    start = text.find("{")
    if start == -1:
        return None
    end = text.rfind("}")
    for _ in range(2):
        if end <= start:
            return None
        found = _load(text[start : end + 1])
        if found is not None:
            return found
        end = text.rfind("}", start, end)
    return None


def _as_str(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value[:200]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_envelope(text: str) -> dict[str, str]:
    """``type``, ``code``, ``status``, ``message`` and ``param`` of a provider error body.

    Understands the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``,
    Anthropic's ``{"type": "error", "error": {"type", "message"}}``, Google's
    ``{"error": {"code": 429, "message", "status": "RESOURCE_EXHAUSTED"}}`` (also as a
    list, and with the body nested once as a JSON string in ``message``), Ollama's
    ``{"error": "..."}`` and flat ``{"message", "type", "code"}`` objects.
    """
    found: dict[str, str] = {}
    obj = _find_envelope(text)
    for _ in range(3):  # the error object, and at most two nested envelopes
        if isinstance(obj, list) and obj:
            obj = obj[0]
        if not isinstance(obj, Mapping):
            break
        inner = obj.get("error")
        if isinstance(inner, Mapping):
            obj = inner
        elif isinstance(inner, str):
            found["message"] = inner[:500]
        # a nested envelope is the provider's own; it wins over the relay's wrapper
        for key in ("type", "code", "status", "param"):
            value = _as_str(obj.get(key))
            if value is not None and value != "error":
                found[key] = value
        message = obj.get("message")
        if isinstance(message, str):
            stripped = message.lstrip()
            if stripped.startswith(("{", "[")):
                obj = _find_envelope(stripped)
                continue
            found["message"] = message[:500]
        break
    return found


# "[\\'"]type..." with the plain word first and the quote checked behind it: the same
# fields found, several times faster on long text
_FIELD_VALUE = r"""[\\'"]{1,3}\s?:\s?[\\'"]{1,3}([a-z][a-z0-9_.]{2,60})"""
_TYPE_RE = re.compile(r"""type(?<=[\\'"]type)""" + _FIELD_VALUE)
_CODE_RE = re.compile(r"""code(?<=[\\'"]code)""" + _FIELD_VALUE)


_QUOTES = ("'", '"', "\\")


def scan_envelope_fields(lowered: str, has: Has | None = None) -> dict[str, str]:
    """``type``/``code`` string fields found by pattern when the envelope did not parse."""
    has = has or lowered.__contains__
    found: dict[str, str] = {}
    for key, regex in (("type", _TYPE_RE), ("code", _CODE_RE)):
        # the field name always follows a quote or a backslash
        if not any(has(quote + key) for quote in _QUOTES):
            continue
        for match in regex.finditer(lowered):
            if match.group(1) != "error":
                found[key] = match.group(1)
                break
    return found


# ---------------------------------------------------------------- details

_INT = r"(\d[\d,]{0,12})"

# (regex, requested groups, limit group); the text is lower-cased. The requested tokens
# are the sum of their groups: some stacks give the prompt and the output budget apart.
_CONTEXT_NUMBERS: tuple[tuple[re.Pattern[str], tuple[int, ...], int], ...] = tuple(
    (re.compile(p), req, lim)
    for p, req, lim in (
        (
            rf"maximum context length is {_INT} tokens\W{{1,3}}however,? you requested"
            rf" (?:about )?{_INT}",
            (2,),
            1,
        ),
        # vLLM: "... and your request has 3500 input tokens (1000 > 4096 - 3500)", where
        # 1000 is max_tokens
        (
            rf"maximum context length is {_INT} tokens and your request has {_INT} input"
            rf" tokens \({_INT} > ",
            (2, 3),
            1,
        ),
        (rf"maximum context length is {_INT} tokens and your request has {_INT}", (2,), 1),
        (
            rf"maximum context length is {_INT} tokens\W{{1,3}}however,? your (?:messages"
            rf" resulted in|request has) {_INT}",
            (2,),
            1,
        ),
        (rf"prompt is too long: {_INT} tokens > {_INT}", (1,), 2),
        (
            rf"input token count \(?{_INT}\)? exceeds the maximum number of tokens"
            rf" allowed \(?{_INT}",
            (1,),
            2,
        ),
        # Vertex AI
        (
            rf"input token count is {_INT} but (?:the )?model only supports up to {_INT}",
            (1,),
            2,
        ),
        (rf"request \({_INT} tokens\) exceeds the available context size \({_INT}", (1,), 2),
        (rf"requested tokens \({_INT}\) exceed context window of {_INT}", (1,), 2),
        (rf"prompt contains {_INT} tokens.{{0,60}}?maximum context length of {_INT}", (1,), 2),
        (rf"prompt contains {_INT} tokens.{{0,60}}?model with {_INT} maximum context", (1,), 2),
        (rf"cannot exceed {_INT} - received {_INT}", (2,), 1),
        # vLLM
        (rf"prompt length of {_INT} is longer than the maximum model length of {_INT}", (1,), 2),
        (
            rf"total length {_INT}\) is too long to fit into the model \(context length {_INT}",
            (1,),
            2,
        ),
        (rf"input prompt \({_INT} tokens\) is too long and exceeds limit of {_INT}", (1,), 2),
        # Anthropic: "... exceed context limit: 94607 + 112147 > 204648"
        (rf"exceed context limit: {_INT} \+ {_INT} > {_INT}", (1, 2), 3),
        (rf"number of tokens \({_INT}\) exceeded maximum context length \({_INT}", (1,), 2),
        # Ollama's server log: msg="input exceeds context length" prompt=2782 limit=2048
        (rf"context length\W{{1,3}}prompt={_INT} limit={_INT}", (1,), 2),
        # TGI: "... must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`"
        (
            rf"must be <= {_INT}\W{{1,3}}given: {_INT} \W{{0,3}}inputs\W{{0,3}} tokens and"
            rf" {_INT} \W{{0,3}}max_new_tokens",
            (2, 3),
            1,
        ),
        (rf"must be <= {_INT}\W{{1,3}}given: {_INT}", (2,), 1),
        (rf"must have less than {_INT} tokens\W{{1,3}}given: {_INT}", (2,), 1),
        (rf"n_prompt_tokens\W{{1,4}}{_INT}\W{{1,4}}n_ctx\W{{1,4}}{_INT}", (1,), 2),
    )
)
_LIMIT_ONLY = re.compile(
    rf"(?:maximum context length is|context window of|context limit of) {_INT}"
)
_LIMIT_ONLY_GATES = ("maximum context length is", "context window of", "context limit of")

_RETRY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"try again in (?:(\d{1,5})h)?(?:(\d{1,5})m(?!s))?(\d{1,7}(?:\.\d{1,12})?)(ms|s)\b"),
    re.compile(r"try again in (\d{1,7}(?:\.\d{1,12})?) ?(seconds?|milliseconds?|minutes?)"),
    re.compile(r"retry (?:after|in) (\d{1,7}(?:\.\d{1,12})?) ?(seconds?|s|ms|milliseconds?)\b"),
    re.compile(r"retry_?delay\W{1,6}(\d{1,7}(?:\.\d{1,12})?)s"),
)


def _gate(regex: re.Pattern[str]) -> str:
    gate = required_literal(regex.pattern)
    if gate is None:  # pragma: no cover - every extractor pattern has one
        raise ValueError(f"no gate for {regex.pattern!r}")
    return gate


# each regex runs only when its gate (text every match contains) occurs
_CONTEXT_GATES = tuple(_gate(regex) for regex, _, _ in _CONTEXT_NUMBERS)
_RETRY_GATES = tuple(_gate(regex) for regex in _RETRY_PATTERNS)

# (gate, regex): the regex runs only when the gate text occurs
_MODEL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (gate, re.compile(literal_first(p)))
    for gate, p in (
        (
            "in organization",
            r"(?:rate limit reached|request too large) for (?:model )?`?"
            r"([a-z0-9][\w.:/-]{1,80}?)`? in organization",
        ),
        (
            "does not exist",
            r"the (?:requested )?model [`'\"]?([a-z0-9/][\w.:/@-]{1,100}?)[`'\"]? "
            r"does not exist",
        ),
        (
            "model",
            r"model [`'\"]([a-z0-9][\w.:/@-]{1,100})[`'\"] (?:not found|has been decommissioned)",
        ),
        ("models/", r"models/([a-z0-9][\w.-]{1,80}) is not found"),
        (
            "no endpoints found for",
            r"no endpoints found for ([a-z0-9][\w.:/-]{1,100}?)\.?(?:\s|$|\"|')",
        ),
        # "model: claude-...", also relayed: "us.anthropic.claude-...", "anthropic:claude-..."
        ("claude-", r"\bmodel\W{1,4}((?:[a-z0-9][\w-]{0,30}[.:]){0,3}claude-[\w.:-]{1,80})"),
        # "does not have access to model `gpt-4o-mini`", "must be verified to use the model"
        (
            "model `",
            r"(?:access to|to use) (?:the )?model `([a-z0-9/][\w.:/@-]{1,100}?)`",
        ),
        (
            "deployment",
            r"deployment (?:for|named)? ?[`'\"]?([\w.-]{1,80})[`'\"]? "
            r"(?:does not exist|not found)",
        ),
        ('"model"', r"\"model\"\s?:\s?\"([a-z0-9][\w.:/@-]{1,100})\""),
    )
)

_STATUS_IN_TEXT: tuple[re.Pattern[str], ...] = tuple(
    re.compile(literal_first(p))
    for p in (
        r"error code: ([1-5]\d\d)\b",
        r"\bstatus(?:[ _]?code)?\W{1,4}([45]\d\d)\b",
        r"\bhttp(?:/\d(?:\.\d)?)? ([45]\d\d)\b",
        # "\b(?:api error|error)" found the same statuses: "api error" ends in "\berror"
        r"\berror:? \(?([45]\d\d)\b",
        r"\"code\"\s?:\s?([45]\d\d)\b",
        r"^([45]\d\d) ",
        # "\b([45]\d\d) ..." with the boundary checked after the digits: 4x faster
        r"([45]\d\d)(?<=\b\d\d\d) (?:too many requests|internal server error"
        r"|service unavailable|bad gateway|gateway time-?out|bad request|unauthorized|forbidden"
        r"|not found|overloaded)",
    )
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def context_numbers(lowered: str, has: Has | None = None) -> dict[str, int]:
    """``requested_tokens`` and ``limit_tokens`` (the context window) when the text has them.

    ``requested_tokens`` is the whole request (prompt and output budget) when the text
    gives both; a count below the limit (a stack that names only the prompt while the
    output budget made it overflow) is left out rather than shown as "exceeded".
    """
    has = has or lowered.__contains__
    for gate, (regex, req, lim) in zip(_CONTEXT_GATES, _CONTEXT_NUMBERS, strict=True):
        if not has(gate):
            continue
        match = regex.search(lowered)
        if match:
            requested = sum(_number(match.group(group)) for group in req)
            limit = _number(match.group(lim))
            if requested < limit:
                return {"limit_tokens": limit}
            return {"requested_tokens": requested, "limit_tokens": limit}
    if not any(has(gate) for gate in _LIMIT_ONLY_GATES):
        return {}
    match = _LIMIT_ONLY.search(lowered)
    if match:
        return {"limit_tokens": _number(match.group(1))}
    return {}


def retry_after_seconds(lowered: str, has: Has | None = None) -> float | None:
    """Seconds the provider asked us to wait, from its wording ("try again in 6.78s")."""
    has = has or lowered.__contains__
    match = _RETRY_PATTERNS[0].search(lowered) if has(_RETRY_GATES[0]) else None
    if match:
        hours, minutes, value, unit = match.groups()
        seconds = float(value) / (1000.0 if unit == "ms" else 1.0)
        seconds += int(minutes or 0) * 60 + int(hours or 0) * 3600
        return round(seconds, 3)
    for gate, regex in zip(_RETRY_GATES[1:], _RETRY_PATTERNS[1:], strict=True):
        if not has(gate):
            continue
        match = regex.search(lowered)
        if match:
            value = float(match.group(1))
            unit = match.group(2) if regex.groups > 1 else "s"
            if unit.startswith("ms") or unit.startswith("milli"):
                value /= 1000.0
            elif unit.startswith("minute"):
                value *= 60.0
            return round(value, 3)
    return None


def model_name(lowered: str, original: str, has: Has | None = None) -> str | None:
    """The model the message is about, in its original spelling."""
    has = has or lowered.__contains__
    for gate, regex in _MODEL_PATTERNS:
        if not has(gate):
            continue
        match = regex.search(lowered)
        if match:
            start, end = match.span(1)
            # the original text has the same length: lower() keeps ASCII offsets; fall
            # back to the lowered spelling if a non-ASCII character shifted them
            candidate = original[start:end]
            return candidate if candidate.lower() == match.group(1) else match.group(1)
    return None


def status_in_text(lowered: str) -> int | None:
    """An HTTP error status the text itself reports ("Error code: 429 - ...")."""
    for regex in _STATUS_IN_TEXT:
        match = regex.search(lowered)
        if match:
            status = int(match.group(1))
            if 400 <= status <= 599:
                return status
    return None


# ---------------------------------------------------------------- providers

PROVIDER_ALIASES: dict[str, str] = {
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azureopenai": "azure",
    "openai": "openai",
    "anthropic": "anthropic",
    "claude": "anthropic",
    "gemini": "gemini",
    "google": "gemini",
    "google_genai": "gemini",
    "genai": "gemini",
    "vertex": "vertex",
    "vertex_ai": "vertex",
    "vertexai": "vertex",
    "vertex-ai": "vertex",
    "bedrock": "bedrock",
    "aws": "bedrock",
    "aws_bedrock": "bedrock",
    "mistral": "mistral",
    "mistralai": "mistral",
    "cohere": "cohere",
    "groq": "groq",
    "openrouter": "openrouter",
    "together": "together",
    "together_ai": "together",
    "togetherai": "together",
    "deepseek": "deepseek",
    "huggingface": "huggingface",
    "hf": "huggingface",
    "hugging_face": "huggingface",
    "tgi": "tgi",
    "text-generation-inference": "tgi",
    "ollama": "ollama",
    "vllm": "vllm",
    "llamacpp": "llamacpp",
    "llama.cpp": "llamacpp",
    "llama_cpp": "llamacpp",
    "llama-cpp": "llamacpp",
}


def normalize_provider(provider: str | None) -> str | None:
    """A provider name in canonical spelling (``"Azure OpenAI"`` -> ``"azure"``)."""
    if not provider or not isinstance(provider, str):
        return None
    key = provider.strip().lower().replace(" ", "_")[:40]
    if key in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[key]
    head = key.split("_")[0].split("/")[0]
    return PROVIDER_ALIASES.get(head, key or None)


# Order matters: routers and clouds that relay another vendor's model come first
# (an OpenRouter or Bedrock error often names "anthropic" or "openai" too).
PROVIDER_NEEDLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("openrouter", ("openrouter",)),
    ("azure", ("azure", "openai.azure.com", "content management policy", "deploymentnotfound")),
    ("bedrock", ("bedrock", "invokemodel", "converse operation", "botocore", "amazonaws.com")),
    ("vertex", ("vertex", "aiplatform.googleapis.com")),
    ("gemini", ("gemini", "generativelanguage.googleapis.com", "googleapis.com")),
    ("groq", ("groq",)),
    ("deepseek", ("deepseek",)),
    ("together", ("together.ai", "together.xyz", "togetherai", "together_ai")),
    ("mistral", ("mistral",)),
    ("cohere", ("cohere",)),
    ("tgi", ("text-generation-inference", "max_new_tokens", "text_generation")),
    ("huggingface", ("huggingface", "hugging face", "hf.co/")),
    ("ollama", ("ollama", ":11434")),
    ("vllm", ("vllm",)),
    ("llamacpp", ("llama.cpp", "llama_cpp", "llama-server", "exceed_context_size_error", "n_ctx")),
    ("anthropic", ("anthropic", "claude", "x-api-key", "overloaded_error")),
    ("openai", ("openai", "platform.openai.com", "gpt-", "chatgpt")),
)


EXTRACTOR_GATES: dict[str, tuple[str, ...]] = {
    "fields": tuple(quote + key for key in ("type", "code") for quote in _QUOTES),
    "context": (*_CONTEXT_GATES, *_LIMIT_ONLY_GATES),
    "retry": _RETRY_GATES,
    "model": tuple(gate for gate, _ in _MODEL_PATTERNS),
}
"""Each extractor's gates: it finds nothing unless one of them occurs."""

GATE_KEYS: tuple[str, ...] = ("type", "code", *(g for v in EXTRACTOR_GATES.values() for g in v))
"""Every gate the extractors pass to ``has``, for the engine to index."""

STATUS_TOKENS = frozenset(str(n) for n in range(400, 600))
"""On ASCII text, :func:`status_in_text` finds nothing unless one of these is a whole token."""


def detect_provider(lowered: str) -> str | None:
    """The provider the text names or whose wording it uses, or None."""
    for provider, needles in PROVIDER_NEEDLES:
        for needle in needles:
            if needle in lowered:
                return provider
    return None
