"""Which hosts are LLM provider APIs, and which provider each one is.

One table for every adapter: the LLM SDK exception translator and the httpx client
adapter both ask :func:`provider_for_host` whether a failed call went to an LLM API
(then its error is classified into an ``LLM_*`` code) and to which provider.
"""

from __future__ import annotations

import re
import threading

# domain -> provider name (the classifier's provider names). A host matches when it is
# the domain itself, a subdomain of it, or a regional "<region>-<domain>" form.
_DOMAINS: dict[str, str] = {
    "api.openai.com": "openai",
    "openai.azure.com": "azure",
    "cognitiveservices.azure.com": "azure",
    "services.ai.azure.com": "azure",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "aiplatform.googleapis.com": "vertex",
    "api.mistral.ai": "mistral",
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
_BEDROCK = re.compile(r"^bedrock-runtime[\w.-]*\.amazonaws\.com$")
OLLAMA_PORT = 11434
_lock = threading.Lock()


def provider_for_host(host: str | None, port: int | None = None) -> str | None:
    """The provider whose API ``host`` (and port, for Ollama) is, or None."""
    if not host:
        return "ollama" if port == OLLAMA_PORT else None
    host = host.lower().rstrip(".")
    provider = _DOMAINS.get(host)
    if provider is not None:
        return provider
    for domain, name in list(_DOMAINS.items()):
        if host.endswith(("." + domain, "-" + domain)):
            return name
    if _BEDROCK.match(host):
        return "bedrock"
    if port == OLLAMA_PORT:
        return "ollama"
    return None


def add_llm_host(host: str, provider: str = "custom") -> None:
    """Treat calls to ``host`` (and its subdomains) as calls to an LLM API.

    Use it for self-hosted serving stacks (vLLM, TGI, an internal gateway); name the
    provider when its wording is one the classifier knows (``"vllm"``, ``"tgi"``).
    """
    with _lock:
        _DOMAINS[host.strip().lower().rstrip(".")] = provider
