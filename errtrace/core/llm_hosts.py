"""Which hosts are LLM provider APIs, and which provider each one is.

One table for every adapter: the LLM SDK exception translator and the httpx client
adapter both ask :func:`provider_for_host` whether a failed call went to an LLM API
(then its error is classified into an ``LLM_*`` code) and to which provider.

The built-in hosts are third-party APIs: :func:`is_third_party` says so, and outgoing
calls to them carry only what ``Config.third_party_propagation`` allows (by default the
``traceparent``, not the caller's baggage or business code). Hosts added with
:func:`add_llm_host` are taken for the user's own (a self-hosted model server) unless
added with ``third_party=True``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

# domain -> provider name (the classifier's provider names). A host matches when it is
# the domain itself or a subdomain of it; for a built-in domain of three labels or more
# also a regional "<region>-<domain>" form (us-central1-aiplatform.googleapis.com),
# which stays under the provider's own parent domain.
_DOMAINS: dict[str, str] = {
    "api.openai.com": "openai",
    "openai.azure.com": "azure",
    "openai.azure.us": "azure",  # Azure Government
    "cognitiveservices.azure.com": "azure",
    "services.ai.azure.com": "azure",
    "models.ai.azure.com": "azure",  # serverless model deployments
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "aiplatform.googleapis.com": "vertex",
    "api.mistral.ai": "mistral",
    "codestral.mistral.ai": "mistral",
    "api.groq.com": "groq",
    "api.cohere.ai": "cohere",
    "api.cohere.com": "cohere",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "openrouter.ai": "openrouter",
    "api.deepseek.com": "deepseek",
    "api-inference.huggingface.co": "huggingface",
    "router.huggingface.co": "huggingface",
    "endpoints.huggingface.cloud": "huggingface",
    "api.fireworks.ai": "fireworks",
}
# bedrock-runtime / bedrock-agent-runtime, any region, FIPS, China, VPC endpoints.
_BEDROCK = re.compile(
    r"^(?:[\w-]+\.)?bedrock(?:-agent)?-runtime[\w.-]*\.amazonaws\.com(?:\.cn)?$"
)
_REGIONAL = frozenset(d for d in _DOMAINS if d.count(".") >= 2)
"""Built-in domains whose "<region>-<domain>" form is theirs too."""
OLLAMA_PORT = 11434
_lock = threading.Lock()
# The domains of _DOMAINS that are someone else's API (all built-in ones).
_THIRD_PARTY: set[str] = set(_DOMAINS)

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
HOST_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")
"""A host name as errtrace takes it in lists: lower case ASCII (IDNA names in their
``xn--`` form), no scheme, port, path or final dot."""


def normalize_host(host: str) -> str:
    """``host`` lower case, without surrounding space or a final dot, and in its ASCII
    (``xn--``) form when it is an internationalised name; "" when it has none."""
    name = host.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    return name


def provider_for_host(host: str | None, port: int | None = None) -> str | None:
    """The provider whose API ``host`` (and port, for Ollama) is, or None."""
    if not host:
        return "ollama" if port == OLLAMA_PORT else None
    host = normalize_host(host)
    provider = _DOMAINS.get(host)
    if provider is not None:
        return provider
    found = _most_specific(host)
    if found is not None:
        return _DOMAINS.get(found)
    if _BEDROCK.match(host):
        return "bedrock"
    if port == OLLAMA_PORT:
        return "ollama"
    return None


def is_under(host: str, domain: str) -> bool:
    """Whether ``host`` is ``domain`` or one of its subdomains (both normalised)."""
    return host == domain or host.endswith("." + domain)


def _matches(host: str, domain: str) -> bool:
    return is_under(host, domain) or (domain in _REGIONAL and host.endswith("-" + domain))


def _most_specific(host: str) -> str | None:
    """The longest domain of the table that ``host`` falls under, if any."""
    return max((d for d in list(_DOMAINS) if _matches(host, d)), key=len, default=None)


def is_third_party(host: str | None) -> bool:
    """Whether ``host`` is a third party's LLM API: a built-in provider host (Bedrock
    included), or one added with ``add_llm_host(..., third_party=True)``."""
    if not host:
        return False
    known = _third_party_seen.get(host)
    if known is not None:
        return known
    name = normalize_host(host)
    if name in _DOMAINS:
        answer = name in _THIRD_PARTY
    else:
        # The most specific domain decides: an own host under a provider's domain is own.
        found = _most_specific(name)
        answer = found in _THIRD_PARTY if found is not None else bool(_BEDROCK.match(name))
    if len(_third_party_seen) >= _SEEN_MAX:  # bounded: hosts may come from anywhere
        _third_party_seen.clear()
    _third_party_seen[host] = answer
    return answer


# Answers of is_third_party by host as given (asked on every outgoing call); cleared
# when the table changes.
_third_party_seen: dict[str, bool] = {}
_SEEN_MAX = 1024


def add_llm_host(host: str, provider: str = "custom", *, third_party: bool = False) -> None:
    """Treat calls to ``host`` (and its subdomains) as calls to an LLM API.

    Use it for self-hosted serving stacks (vLLM, TGI, an internal gateway); name the
    provider when its wording is one the classifier knows (``"vllm"``, ``"tgi"``).
    ``third_party=True`` marks a provider run by someone else: outgoing calls to it then
    carry only what ``Config.third_party_propagation`` allows, as for the built-in ones.
    Without it the host is your own, and so are its subdomains, even under a provider's
    domain: re-adding a built-in host without it makes that host your own. A URL, a
    port or a path is refused (``ValueError``): only a host name matches.
    """
    name = normalize_host(host) if isinstance(host, str) else ""
    if not HOST_RE.match(name):
        raise ValueError(
            f"add_llm_host: {host!r} is not a host name (no scheme, port or path)"
        )
    with _lock:
        _DOMAINS[name] = provider
        if third_party:
            _THIRD_PARTY.add(name)
        else:
            _THIRD_PARTY.discard(name)
        _third_party_seen.clear()


# The headers in which providers name a call for their support: OpenAI, Mistral, Groq
# and others "x-request-id"; Anthropic "request-id"; Azure "apim-request-id".
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id")
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")


def provider_request_id(get: Callable[[str], object]) -> str | None:
    """The provider's id of a call, from its response headers (``get`` looks one up by
    lower-case name), when it is 1-128 visible ASCII characters; else None."""
    for name in _REQUEST_ID_HEADERS:
        try:
            value = get(name)
        except Exception:  # a foreign headers object: no id rather than a failure
            return None
        if isinstance(value, str):
            value = value.strip()
            if _REQUEST_ID_RE.fullmatch(value):
                return value
    return None
