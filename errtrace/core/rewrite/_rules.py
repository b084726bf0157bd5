"""The built-in rule table: provider error wording -> LLM_* code.

One rule targets an AI serving code instead: a serving stack (vLLM, TGI, a local
torch server) that ran out of accelerator memory says so in words no provider uses,
and ``AI_GPU_OUT_OF_MEMORY`` (retryable, "lower the batch size") is what it means.

Rules are data. Each :class:`Rule` names a code, some case-insensitive regular
expressions, optional ``status``/``provider`` conditions and a ``priority``; the
first rule (highest priority first, then table order) whose conditions hold and one
of whose patterns matches decides. Built-in patterns are written in lower case
because they run on the lower-cased text.

Priority bands (user rules may sit above, between or below them):

======= ===================================================================
 band    what
======= ===================================================================
 700-799 wording specific to one provider or serving stack, or a provider's
         own error type/code (``insufficient_quota``, ``overloaded_error``)
 650-699 agent/tool layer: unparseable model output, unknown tools
 400-499 generic wording (``rate limit``, ``context window``, ``timed out``)
 200-299 weak hints (a bare ``invalid_request_error`` or ``server_error`` type);
         they yield to an HTTP status that suggests another code
 100     the HTTP status passed by the caller, alone (``status-only:NNN``)
 50      an HTTP status found in the text, alone (``status-in-text:NNN``)
 0       nothing matched: ``LLM_UNKNOWN`` (``fallback:unknown``)
======= ===================================================================

Within a band the order encodes which reading wins when a message says two things:
quota beats rate limit (a quota error often arrives as a 429 that says "rate"),
content filter beats invalid request (Azure sends filtered prompts as 400), overloaded
beats server error (OpenAI labels overload ``server_error``).

A weak hint outranks the bare status only where they agree or the status says nothing
more: OpenAI puts ``"type": "invalid_request_error"`` on its 401, 403 and 404
answers too, and a ``server_error`` may come as a 503 (overloaded). So a weak rule is
skipped when the HTTP status (the caller's, else one written in the text) suggests
another code; a credential, model or capacity failure is not blamed on the caller.

Each rule may carry ``needles``: plain lower-case substrings of which at least one
must occur before any of its regexes runs. That cheap ``in`` test keeps a message
from paying for every regex in the table.

Rather than test every literal, the engine splits a message once into tokens
(maximal ``[a-z0-9]`` runs) and only tries rules whose literals, needles or regex
gates could occur among them (see ``_index``). A rule whose regexes cannot be
anchored that way may name ``anchors``: whole tokens of which every text its regexes
match contains one (``"i"`` for ``\bi(?:'m| am)? ...``); the engine trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITY_PROVIDER = 700
PRIORITY_AGENT = 650
PRIORITY_GENERIC = 400
PRIORITY_WEAK = 200
PRIORITY_STATUS_ONLY = 100
PRIORITY_STATUS_IN_TEXT = 50
PRIORITY_FALLBACK = 0


@dataclass(frozen=True)
class Rule:
    """One classification rule (built-in or from a rule file)."""

    id: str
    code: str
    patterns: tuple[str, ...]
    status: frozenset[int] | None = None
    provider: frozenset[str] | None = None
    priority: int = PRIORITY_GENERIC
    hint: str | None = None
    needles: tuple[str, ...] = ()
    confidence: float = 0.8
    source: str = "builtin"
    anchors: tuple[str, ...] = ()
    """Whole tokens (``[a-z0-9]+``), one of which every match of the regexes contains."""
    weak: bool = False
    """A hint many different failures share (a bare error *type*): it does not decide
    against an HTTP status that suggests another code (see :func:`status_code_for`)."""


def _r(
    id: str,
    code: str,
    priority: int,
    patterns: tuple[str, ...] | list[str],
    needles: tuple[str, ...] | list[str] = (),
    *,
    provider: tuple[str, ...] = (),
    status: tuple[int, ...] = (),
    anchors: tuple[str, ...] = (),
) -> Rule:
    if priority >= PRIORITY_PROVIDER:
        confidence = 0.95
    elif priority >= PRIORITY_AGENT:
        confidence = 0.9
    elif priority >= PRIORITY_GENERIC:
        confidence = 0.8
    else:
        confidence = 0.6
    return Rule(
        id=id,
        code=code,
        patterns=tuple(patterns),
        priority=priority,
        needles=tuple(needles),
        provider=frozenset(provider) or None,
        status=frozenset(status) or None,
        confidence=confidence,
        anchors=anchors,
        weak=priority < PRIORITY_GENERIC,
    )


CTX = "LLM_CONTEXT_LENGTH_EXCEEDED"
RATE = "LLM_RATE_LIMITED"
QUOTA = "LLM_QUOTA_EXCEEDED"
AUTH = "LLM_AUTH_FAILED"
PERM = "LLM_PERMISSION_DENIED"
MODEL = "LLM_MODEL_NOT_FOUND"
FILTER = "LLM_CONTENT_FILTERED"
INVALID = "LLM_INVALID_REQUEST"
TIMEOUT = "LLM_TIMEOUT"
OVERLOAD = "LLM_OVERLOADED"
SERVER = "LLM_SERVER_ERROR"
CONN = "LLM_CONNECTION_ERROR"
PARSE = "LLM_OUTPUT_PARSE_ERROR"
TOOL = "LLM_TOOL_ERROR"
UNKNOWN = "LLM_UNKNOWN"
GPU_OOM = "AI_GPU_OUT_OF_MEMORY"

P = PRIORITY_PROVIDER
A = PRIORITY_AGENT
G = PRIORITY_GENERIC
W = PRIORITY_WEAK

BUILTIN_RULES: tuple[Rule, ...] = (
    # ---- Gemini quota counters, before OpenAI's quota wording: Gemini says "You
    # exceeded your current quota" for its per-minute and per-day limits too, and adds
    # the metric and its own rate-limits page; a limit of 0 is a tier without quota ----
    _r(
        "gemini:no-quota-on-tier",
        QUOTA,
        P + 90,
        [r"quota exceeded for metric: \S{1,160} limit: 0\b"],
        ["limit: 0"],
    ),
    _r(
        "gemini:quota-window",
        RATE,
        P + 85,
        [
            "quota exceeded for metric",
            "gemini-api/docs/rate-limits",
        ],
    ),
    # ---- quota / billing (above rate limits: quota errors often come back as 429) ----
    _r(
        "openai:insufficient-quota",
        QUOTA,
        P + 80,
        [
            "insufficient_quota",
            "exceeded your current quota",
            "billing_hard_limit_reached",
            "billing hard limit has been reached",
            # OpenAI's billing error codes, whatever the error type says
            "organization_spend_limit_exceeded",
            "project_spend_limit_exceeded",
            "credit_balance_exhausted",
            "organization_usage_limit_exceeded",
        ],
    ),
    _r(
        "anthropic:credit-balance",
        QUOTA,
        P + 80,
        [
            "credit balance is too low",
            # a 429 rate_limit_error whose details.error_code says the spend limit was hit
            "enforced_spend_limit_reached",
            "enforcedspendlimitreached",
            # sent as a 400 invalid_request_error
            "reached your specified api usage limits",
        ],
    ),
    _r("deepseek:insufficient-balance", QUOTA, P + 80, ["insufficient balance"]),
    _r(
        "openrouter:credits",
        QUOTA,
        P + 80,
        [
            r"insufficient credits",
            r"requires more credits",
            r"can only afford \d+",
        ],
        ["credits", "afford"],
    ),
    _r(
        "huggingface:monthly-credits",
        QUOTA,
        P + 80,
        [
            "exceeded your monthly included credits",
            "pre-paid credits",
        ],
    ),
    _r(
        "generic:quota",
        QUOTA,
        G + 80,
        [
            r"\bout of credits?\b",
            r"credit limit (?:exceeded|reached)",
            r"payment required",
            r"\bspend(?:ing)? limit (?:exceeded|reached)",
            r"\bquota (?:has been )?exceeded\b",
            r"exceeded (?:your|the) (?:monthly |daily )?quota",
            r"used (?:all|up) (?:of )?your credits",
        ],
        ["credit", "payment", "spend", "quota"],
    ),
    # ---- content filtering (above invalid request: Azure sends it as 400) ----
    _r(
        "azure:content-filter",
        FILTER,
        P + 70,
        [
            "content management policy",
            "responsibleaipolicyviolation",
            "content_filter",
        ],
    ),
    _r(
        "openai:safety-system",
        FILTER,
        P + 70,
        [
            "rejected as a result of our safety system",
            "content_policy_violation",
            r"flagged as potentially violating",
            "violating our usage polic",
            "violate our guardrails",
            "contentfilterfinishreasonerror",
            "rejected by the content filter",
        ],
    ),
    _r("anthropic:output-blocked", FILTER, P + 70, ["blocked by content filtering policy"]),
    _r(
        "gemini:safety",
        FILTER,
        P + 70,
        [
            r"finish_?reason\W{0,6}(?:safety|prohibited_content|blocklist|spii|recitation)",
            r"block_?reason\W{0,6}(?:safety|other|blocklist|prohibited_content)",
            r"blocked for reason\W{0,3}(?:safety|other|blocklist|prohibited_content)",
            r"candidate was blocked due to",
            r"response (?:was|is) blocked due to safety",
            "prohibited_content",
        ],
        ["reason", "blocked", "prohibited_content"],
    ),
    _r("bedrock:guardrail", FILTER, P + 70, ["guardrail intervened", "guardrail_intervened"]),
    # DeepSeek answers a refused prompt with a 400 invalid_request_error
    _r("deepseek:content-risk", FILTER, P + 70, ["content exists risk"]),
    _r(
        "generic:content-policy",
        FILTER,
        G + 70,
        [
            r"content (?:policy|filter(?:ing)?|moderation)",
            r"safety (?:filter|system|settings)",
            r"\bflagged by (?:the )?moderation",
            r"blocked by (?:the )?(?:safety|moderation)",
        ],
        ["content", "safety", "moderation"],
    ),
    # ---- context window ----
    _r(
        "openai:context-length",
        CTX,
        P + 60,
        [
            r"maximum context length is \d+",
            "context_length_exceeded",
            "reduce the length of the messages",
        ],
        ["maximum context length", "context_length_exceeded", "reduce the length"],
    ),
    _r(
        "anthropic:prompt-too-long",
        CTX,
        P + 60,
        [
            r"prompt is too long: \d+ tokens",
            r"input length and \W?max_tokens\W? exceed context limit",
        ],
        ["prompt is too long", "exceed context limit"],
    ),
    _r(
        "gemini:input-token-count",
        CTX,
        P + 60,
        [
            r"input token count \(?\d+\)? exceeds the maximum",
            "exceeds the maximum number of tokens allowed",
            # Vertex AI
            r"input token count is \d+ but (?:the )?model only supports up to \d+",
        ],
        ["input token count", "maximum number of tokens allowed"],
    ),
    _r(
        "bedrock:input-too-long",
        CTX,
        P + 60,
        [
            "input is too long for requested model",
            "too many input tokens",
        ],
    ),
    _r(
        "vllm:max-model-len",
        CTX,
        P + 60,
        [
            r"is longer than the maximum model length of \d+",
            "too long to fit into the model",
            r"input prompt \(\d+ tokens\) is too long",
        ],
        ["maximum model length", "fit into the model", "input prompt ("],
    ),
    _r(
        "mistral:too-large-for-model",
        CTX,
        P + 60,
        [
            r"too large for model with \d+ maximum context length",
        ],
        ["maximum context length"],
    ),
    _r(
        "cohere:too-many-tokens",
        CTX,
        P + 60,
        [
            r"too many tokens: (?:the )?total number of tokens",
            r"cannot exceed \d+ - received \d+",
        ],
        ["too many tokens", "received"],
    ),
    _r(
        "tgi:max-new-tokens",
        CTX,
        P + 60,
        [
            r"inputs\W{0,3} tokens \+ \W{0,3}max_new_tokens\W{0,3} must be <= \d+",
            r"input validation error: \W{0,3}inputs\W{0,3} must have less than \d+ tokens",
        ],
        ["max_new_tokens", "must have less than"],
    ),
    _r(
        "llamacpp:context-size",
        CTX,
        P + 60,
        [
            "exceed_context_size_error",
            "exceeds the available context size",
            r"requested tokens \(\d+\) exceed context window",
            "context size has been exceeded",
            "context shift is disabled",
        ],
        ["context"],
    ),
    _r(
        "generic:context-window",
        CTX,
        G + 60,
        [
            r"context (?:length|window|size) (?:exceeded|limit (?:exceeded|reached))",
            r"exceeds? (?:the )?(?:model'?s? )?(?:maximum |max )?context (?:length|window|size)",
            r"(?:prompt|input) (?:is )?too long",
            r"too many tokens in (?:the )?(?:prompt|input)",
            r"maximum (?:context|prompt) length",
        ],
        ["context", "too long", "too many tokens", "maximum"],
    ),
    # ---- accelerator memory (a serving stack's own failure; above rate limits: gRPC
    # servers report exhausted memory as RESOURCE_EXHAUSTED too) ----
    _r(
        "gpu:out-of-memory",
        GPU_OOM,
        P + 55,
        [
            "cuda out of memory",  # torch: "CUDA out of memory. Tried to allocate ..."
            "torch.outofmemoryerror",
            "cuda.outofmemoryerror",
            "cuda error: out of memory",
            "cuda_error_out_of_memory",
            "cudaerrormemoryallocation",
            "cudamalloc failed: out of memory",  # llama.cpp
            "hip out of memory",  # torch on ROCm
            "mps backend out of memory",  # torch on Apple silicon
        ],
    ),
    # ---- rate limits ----
    _r(
        "openai:rate-limit",
        RATE,
        P + 50,
        [
            "rate limit reached for",
            "rate_limit_exceeded",
            r"on (?:tokens|requests) per (?:min|day)",
            r"\((?:tpm|rpm|tpd|rpd)\)",
        ],
        ["rate limit reached", "rate_limit_exceeded", " per min", " per day", "pm)", "pd)"],
    ),
    _r(
        "anthropic:rate-limit",
        RATE,
        P + 50,
        [
            "rate_limit_error",
            "would exceed the rate limit",
            "exceeded your per-minute rate limit",
        ],
    ),
    _r(
        "azure:token-rate",
        RATE,
        P + 50,
        [
            r"exceeded (?:token |call )?rate limit of your current",
            r"please retry after \d+ seconds?",
        ],
        ["rate limit of your current", "retry after"],
    ),
    _r(
        "gemini:resource-exhausted",
        RATE,
        P + 50,
        [
            "resource has been exhausted",
            "resource_exhausted",
            "resource exhausted",
            "ratelimitexceeded",
            r"quota exceeded for quota metric .{0,120}per minute",
            # Vertex AI: "429 Quota exceeded for aiplatform.googleapis.com/
            # generate_content_requests_per_minute_per_project_per_base_model"
            r"quota exceeded for aiplatform\.googleapis\.com/\S{0,120}per_minute",
        ],
        ["exhausted", "ratelimitexceeded", "per minute", "per_minute"],
    ),
    _r(
        "bedrock:throttling",
        RATE,
        P + 50,
        [
            "throttlingexception",
            # "Too many connections, please wait ..." comes as a 503 ServiceUnavailable:
            # capacity, below
            r"too many (?:requests|tokens), please wait before trying again",
            r"\brate exceeded\b",
        ],
        ["throttling", "please wait before trying again", "rate exceeded"],
    ),
    _r("cohere:trial-key", RATE, P + 50, [r"trial key, which is limited to \d+"], ["trial key"]),
    _r(
        "generic:rate-limit",
        RATE,
        G + 50,
        [
            r"rate[ _-]?limit",
            r"too ?many ?requests",  # also TooManyRequestsError (Cohere's SDK)
            r"\bthrottl",
            r"requests? per (?:second|minute)",
            r"\b429 client error",
        ],
        [
            "rate",
            "too many requests",
            "toomanyrequests",
            "throttl",
            "per second",
            "per minute",
            "429",
        ],
    ),
    # ---- authentication ----
    _r(
        "openai:invalid-key",
        AUTH,
        P + 40,
        [
            "incorrect api key provided",
            "invalid_api_key",
            "you didn't provide an api key",
            "invalid authorization header",
            "account associated with this api key has been deactivated",
        ],
    ),
    _r(
        "anthropic:authentication",
        AUTH,
        P + 40,
        [
            "authentication_error",
            "invalid x-api-key",
            "x-api-key header is required",
        ],
    ),
    _r(
        "gemini:api-key",
        AUTH,
        P + 40,
        [
            "api key not valid",
            "api_key_invalid",
            "api key expired",
            "api key not found",
            "request had invalid authentication credentials",
        ],
    ),
    _r(
        "bedrock:credentials",
        AUTH,
        P + 40,
        [
            "security token included in the request is invalid",
            "unrecognizedclientexception",
            "expiredtokenexception",
            "the request signature we calculated does not match",
            "unable to locate credentials",
        ],
    ),
    _r("azure:subscription-key", AUTH, P + 40, ["invalid subscription key"]),
    _r("openrouter:no-auth", AUTH, P + 40, ["no auth credentials found"]),
    _r(
        "huggingface:credentials",
        AUTH,
        P + 40,
        [
            "invalid credentials in authorization header",
            "invalid username or password",
            "the token seems invalid",
        ],
    ),
    _r(
        "generic:auth",
        AUTH,
        G + 40,
        [
            r"invalid (?:api[ _-]?key|api token|access token|bearer token)",
            r"api[ _-]?key (?:is )?(?:invalid|missing|not valid|revoked|expired)",
            r"\bunauthori[sz]ed\b",
            r"authentication (?:failed|error|required)",
            r"\bunauthenticated\b",
            r"missing (?:api[ _-]?key|authentication)",
            r"\bauthentication fails\b",
        ],
        ["invalid", "api", "unauthori", "authenticat", "missing"],
    ),
    # ---- permission ----
    _r(
        "openai:permission",
        PERM,
        P + 35,
        [
            "not allowed to sample from this model",
            "unsupported_country_region_territory",
            "country, region, or territory not supported",
            "insufficient permissions for this operation",
            r"does not have access to model",
            "missing scopes",
            "must be a member of an organization to use the api",
            "organization must be verified to",
        ],
    ),
    _r(
        "anthropic:permission",
        PERM,
        P + 35,
        [
            "permission_error",
            "does not have permission to use the specified resource",
        ],
    ),
    _r(
        "gemini:permission",
        PERM,
        P + 35,
        [
            "user location is not supported",
            "permission_denied",
            "service_disabled",
            r"has not been used in project \d+ before or it is disabled",
            "permission denied on resource",
            "is not allowed to use publisher model",
        ],
        [
            "location is not supported",
            "permission",
            "service_disabled",
            "has not been used",
            "publisher model",
        ],
    ),
    _r(
        "bedrock:access-denied",
        PERM,
        P + 35,
        [
            "accessdeniedexception",
            "you don't have access to the model",
            "model access is denied",
            "you do not have access to the model",
        ],
    ),
    _r(
        "generic:permission",
        PERM,
        G + 35,
        [
            r"\bpermission denied\b",
            r"\baccess (?:is )?denied\b",
            r"\bforbidden\b",
            r"not authori[sz]ed to (?:access|use|perform)",
            r"does not have (?:permission|access)",
            r"do(?:n't| not) have (?:permission|access) to",
            # our organization, not the caller's request (Groq, Anthropic send a 400)
            "organization_restricted",
            r"\borganization (?:has been |is )?(?:disabled|restricted|suspended)\b",
            r"model requires a pro subscription",
        ],
        ["permission", "denied", "forbidden", "authori", "access", "organization", "subscription"],
    ),
    # ---- model / deployment not found ----
    _r(
        "openai:model-not-found",
        MODEL,
        P + 30,
        [
            "model_not_found",
            r"the (?:requested )?model \S{1,120} does not exist",
        ],
        ["model_not_found", "does not exist"],
    ),
    _r(
        "azure:deployment",
        MODEL,
        P + 30,
        [
            "deploymentnotfound",
            "api deployment for this resource does not exist",
        ],
    ),
    _r(
        "anthropic:not-found",
        MODEL,
        P + 30,
        ["not_found_error"],
        provider=("anthropic", "bedrock", "vertex"),
    ),
    _r(
        "gemini:model-not-found",
        MODEL,
        P + 30,
        [
            r"is not found for api version",
            r"models/\S{1,80} is not found",
        ],
        ["not found"],
    ),
    _r(
        "bedrock:model-identifier",
        MODEL,
        P + 30,
        [
            "provided model identifier is invalid",
            "model identifier is invalid",
        ],
    ),
    _r("ollama:pull-first", MODEL, P + 30, ["try pulling it first"]),
    _r(
        "groq:decommissioned",
        MODEL,
        P + 30,
        [
            "model_decommissioned",
            "has been decommissioned",
            "no longer supported",
        ],
        ["decommission", "no longer supported"],
    ),
    _r(
        "openrouter:no-endpoints",
        MODEL,
        P + 30,
        ["no endpoints found", "no allowed providers are available"],
    ),
    _r(
        "together:unable-to-access",
        MODEL,
        P + 30,
        [r"unable to access model \S{1,120}"],
        ["unable to access model"],
    ),
    _r("mistral:invalid-model", MODEL, P + 30, [r"\binvalid model\b"], ["invalid model"]),
    _r(
        "generic:model-not-found",
        MODEL,
        G + 30,
        [
            r"\bmodel\b.{0,80}\b(?:does not exist|doesn't exist|not found|is not available"
            r"|unavailable for)",
            r"\b(?:unknown|no such|unsupported) model\b",
            r"\bmodel not exists?\b",  # DeepSeek, as a 400
            r"deployment \S{1,80} not found",
        ],
        ["model", "deployment"],
    ),
    # ---- overloaded (above server errors) ----
    _r("anthropic:overloaded", OVERLOAD, P + 20, ["overloaded_error"]),
    _r(
        "openai:overloaded",
        OVERLOAD,
        P + 20,
        [
            "currently overloaded with other requests",
            "engine is currently overloaded",
        ],
    ),
    _r(
        "gemini:overloaded",
        OVERLOAD,
        P + 20,
        [
            "the model is overloaded",
            "experiencing high demand",
        ],
    ),
    _r(
        "gemini:unavailable",
        OVERLOAD,
        P + 20,
        [r"\W\s?unavailable\W"],
        ["unavailable"],
        provider=("gemini", "vertex"),
    ),
    _r(
        "bedrock:unavailable",
        OVERLOAD,
        P + 20,
        [
            "serviceunavailableexception",
            "modelnotreadyexception",
            "model is not ready for inference",
            "bedrock is unable to process your request",
            "too many connections, please wait before trying again",
        ],
    ),
    _r(
        "tgi:overloaded",
        OVERLOAD,
        P + 20,
        [
            "model is overloaded",
            r"error_type\W{1,4}overloaded",
        ],
        ["overloaded"],
    ),
    _r("mistral:capacity", OVERLOAD, P + 20, ["service tier capacity exceeded"]),
    _r(
        "huggingface:loading",
        OVERLOAD,
        P + 20,
        [
            r"\bis currently loading\b",
            "estimated_time",
        ],
        ["currently loading", "estimated_time"],
    ),
    _r(
        "generic:overloaded",
        OVERLOAD,
        G + 20,
        [
            r"\boverload(?:ed)?\b",
            r"\bat capacity\b",
            r"\bover capacity\b",
            r"service ?unavailable",  # also litellm.ServiceUnavailableError
            r"temporarily unavailable",
            r"server is busy",
            r"\bhigh demand\b",
            r"capacity exceeded",
            r"no capacity",
        ],
        ["overload", "capacity", "unavailable", "busy", "demand"],
    ),
    # ---- timeouts ----
    _r(
        "sdk:timeout",
        TIMEOUT,
        P + 15,
        [
            "apitimeouterror",
            "request timed out",
            "readtimeout",
            "connecttimeout",
            "writetimeout",
            "pooltimeout",
            "modeltimeoutexception",
            "deadline_exceeded",
            "deadline exceeded",
            "timeoutexception",
            "read timed out",
        ],
    ),
    _r(
        "generic:timeout",
        TIMEOUT,
        G + 15,
        [
            r"\btimed? ?out\b",
            r"\btimeout(?:error)?\b",
            r"gateway time-?out",
        ],
        ["time"],
    ),
    # ---- connection failures ----
    _r(
        "sdk:connection",
        CONN,
        P + 12,
        [
            "apiconnectionerror",
            "error communicating with",
            "failed to connect to ollama",
            "connecterror",
            "remoteprotocolerror",
            "server disconnected",
            "clientconnectorerror",
            "cannot connect to host",
            "peer closed connection",
            "incomplete chunked read",
        ],
    ),
    _r(
        "generic:connection",
        CONN,
        G + 12,
        [
            r"connection (?:was |has been )?(?:error|refused|reset|aborted|closed)",
            r"\bsocket (?:connection )?(?:was |has been )?closed",
            r"\bfetch failed\b",  # Node's fetch (undici)
            r"failed to (?:establish a )?connect",
            r"\b(?:could not|cannot|can't|unable to) connect\b",
            r"name or service not known",
            r"temporary failure in name resolution",
            "getaddrinfo",
            r"nodename nor servname",
            r"network is unreachable",
            r"no route to host",
            r"\be(?:connrefused|connreset|timedout|hostunreach|notfound)\b",
            r"certificate_verify_failed",
            r"\bssl ?error\b",
            r"max retries exceeded with url",
            r"\bdial tcp\b",
            r"connection to .{1,80} failed",
            r"eof occurred in violation of protocol",
        ],
        [
            "connect",
            "name",
            "getaddrinfo",
            "network",
            "route",
            "econn",
            "certificate",
            "ssl",
            "max retries",
            "dial tcp",
            "eof occurred",
            "socket",
            "fetch failed",
            "etimedout",
            "ehostunreach",
            "enotfound",
        ],
    ),
    # ---- server errors ----
    _r(
        "openai:server-error",
        SERVER,
        P + 5,
        [
            "the server had an error while processing your request",
            "the server had an error processing your request",
        ],
    ),
    _r("anthropic:api-error", SERVER, P + 5, [r"\Wapi_error\W"], ["api_error"]),
    _r(
        "gemini:internal",
        SERVER,
        P + 5,
        [
            "an internal error has occurred",
            r"\Wstatus\W{1,4}internal\W",
        ],
        ["internal"],
    ),
    _r(
        "bedrock:internal",
        SERVER,
        P + 5,
        [
            "internalserverexception",
            "modelerrorexception",
            "encountered an unexpected error during processing",
        ],
    ),
    _r(
        "vllm:engine-dead",
        SERVER,
        P + 5,
        [
            "enginedeaderror",
            "asyncenginedeaderror",
            "engine loop is not running",
            "background loop has errored",
        ],
        ["engine", "background loop"],
    ),
    _r("ollama:runner-terminated", SERVER, P + 5, ["llama runner process has terminated"]),
    _r(
        "generic:server-error",
        SERVER,
        G + 5,
        [
            r"internal server error",
            r"\binternal error\b",
            r"\bbad ?gateway\b",  # also litellm.BadGatewayError
            r"\b5\d\d server error\b",
            r"\bserver error\b",
            r"upstream (?:error|connect error)",
        ],
        ["internal", "gateway", "server error", "upstream"],
    ),
    # ---- invalid request (provider wording) ----
    _r(
        "gemini:invalid-payload",
        INVALID,
        P,
        [
            "invalid json payload received",
            "multiturn requests alternate",
            r"generatecontentrequest\.\S{1,60}: ",
        ],
        ["invalid json payload", "multiturn", "generatecontentrequest"],
    ),
    _r(
        "anthropic:invalid-messages",
        INVALID,
        P,
        [
            "roles must alternate",
            r"ids were found without .tool_result. blocks",
            r"max_tokens: field required",
            r"cannot both be specified",
            # our request body, not the model's output (above agent:output-not-json)
            "request body is not valid json",
        ],
        ["alternate", "tool_result", "field required", "both be specified"],
    ),
    _r(
        "openai:invalid-params",
        INVALID,
        P,
        [
            "unrecognized request argument supplied",
            r"invalid type for '",
            "additional properties are not allowed",
            r"must be followed by tool messages responding to each",
            "invalid_request_body",
            "unsupported_parameter",
            "unsupported parameter",
            r"invalid schema for (?:function|response_format)",
            r"'\$\.\S{1,60}' is (?:invalid|too short|too long)",
            r"invalid value for '",
            # our request body, not the model's output (above agent:output-not-json)
            "could not parse the json body of your request",
        ],
        [
            "unrecognized request",
            "invalid type",
            "additional properties",
            "must be followed",
            "invalid_request_body",
            "unsupported",
            "invalid schema",
            "'$.",
            "invalid value",
        ],
    ),
    _r("bedrock:validation", INVALID, P, ["validationexception", "malformed input request"]),
    _r("tgi:input-validation", INVALID, P, ["input validation error"]),
    # ---- agent / tool layer ----
    _r(
        "agent:output-not-json",
        PARSE,
        A + 30,
        [
            "outputparserexception",
            "could not parse llm output",
            "could not parse tool input",
            "invalid json input for tool",
            "invalid json when parsing",
            "the json blob you used is invalid",
            "could not parse response content",
            "lengthfinishreasonerror",
            r"invalid json output",
            r"failed to parse \S{1,80} from completion",
            r"\bjson_invalid\b",
            r"invalid json: ",
            "jsondecodeerror",
            r"expecting (?:value|property name enclosed in double quotes): line \d+",
            r"unterminated string starting at",
            r"not valid json",
            r"is not a valid json",
            r"does not match (?:the )?(?:expected |response |output )?schema",
            r"failed to (?:parse|decode) (?:the )?(?:model|llm) (?:output|response)",
            r"output (?:is )?not (?:valid )?json",
            r"malformed (?:tool|function) (?:call|arguments)",
            "error parsing llm output",  # crewAI
            r"the action input is not a valid key, value dictionary",
            r"invalid format: missing 'action",
            "failed to convert text into a pydantic model",
            # pydantic-ai, instructor: the model's answers kept failing validation
            r"exceeded maximum retries \(\d+\) for (?:result|output) validation",
            r"max retries exceeded\. .{0,80}validation error for",
        ],
        [
            "parse",
            "parsing",
            "json",
            "schema",
            "malformed",
            "unterminated",
            "expecting",
            "dictionary",
            "invalid format",
            "pydantic",
            "validation",
        ],
    ),
    _r(
        "agent:tool-not-found",
        TOOL,
        A + 20,
        [
            r"is not a valid tool",
            r"tool \S{1,80} not found",
            r"\bunknown tool\b",
            r"no tool named",
            r"tool_not_found",
            r"function \S{1,80} (?:not found|is not defined|does not exist)",
            r"error (?:executing|running|calling|invoking) (?:mcp )?tool",
            r"tool (?:call|execution|invocation) failed",
            r"action '[^']{1,80}' (?:don't|doesn't|does not) exist",  # crewAI
            r"tried to call unavailable tool",
            r"\baction \S{1,80} not found",
            r"tool \S{1,80} (?:failed|raised|returned an error)",
            r"\btoolexception\b",
        ],
        ["tool", "function", "action"],
    ),
    _r(
        "agent:model-cannot-use-tool",
        TOOL,
        A + 10,
        [
            # "\bi(?:'m| am)? " is "\b(?:i|i'm|i am) " with the plain "i" first (faster)
            r"\bi(?:'m| am)? (?:do not|don't|cannot|can't|am unable to|unable to|am not able to)"
            r" (?:have )?(?:access|use|run|call|open|read|browse)\w* (?:to )?"
            r"(?:any |the |this |that |a |an )?"
            r"(?:tools?|files?|functions?|attachments?|documents?|internet|web)",
            r"\bi(?:'m| am)? (?:do not|don't) have (?:the ability|access) to"
            r" (?:use |call |run |open |read |browse )",
        ],
        ["i ", "i'm"],
        anchors=("i",),
    ),
    # ---- weak hints: provider error *types* that many different failures share ----
    _r(
        "weak:invalid-request-type",
        INVALID,
        W + 10,
        [
            "invalid_request_error",
            "invalid_argument",
            "badrequesterror",
            r"\bbad request\b",
            r"\binvalid (?:request|parameter|argument)s?\b",
            r"\bmalformed\b",
            r"unprocessable entity",
            r"missing required (?:parameter|field|argument)",
        ],
        ["invalid", "badrequest", "bad request", "malformed", "unprocessable", "missing required"],
    ),
    _r(
        "weak:server-error-type",
        SERVER,
        W,
        [
            "server_error",
            "internalservererror",
        ],
    ),
)
"""The built-in table, in order; see the module docstring for the priority bands."""

STATUS_CODES: dict[int, str] = {
    400: INVALID,
    401: AUTH,
    402: QUOTA,
    403: PERM,
    404: MODEL,
    408: TIMEOUT,
    409: INVALID,
    413: INVALID,
    422: INVALID,
    424: SERVER,
    429: RATE,
    499: TIMEOUT,
    500: SERVER,
    501: SERVER,
    502: SERVER,
    503: OVERLOAD,
    504: TIMEOUT,
    520: SERVER,
    521: CONN,
    522: TIMEOUT,
    523: CONN,
    524: TIMEOUT,
    529: OVERLOAD,
}
"""What an HTTP status alone suggests; used only when no wording rule matched."""


def status_code_for(status: int) -> str | None:
    """The LLM code an HTTP status alone suggests, or None for a non-error status."""
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if 400 <= status < 500:
        return INVALID
    if 500 <= status < 600:
        return SERVER
    return None
