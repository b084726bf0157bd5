"""Adapters to outside libraries (httpx, OpenTelemetry, LLM SDK exceptions, ...)."""

from __future__ import annotations

from errtrace.core.errors import AppError, mapper


def _httpx_translator(exc: BaseException) -> AppError | None:
    # Duck-typed on the module name so that `import errtrace` never imports httpx; an
    # httpx exception escaping a handler means httpx is loaded already.
    if not type(exc).__module__.startswith("httpx"):
        return None
    from errtrace.adapters.httpx import error_from_exception

    return error_from_exception(exc)


def _llm_translator(exc: BaseException) -> AppError | None:
    # A built-in exception is never an LLM SDK's; anything else loads the LLM adapter
    # (and the classifier) on first use rather than at `import errtrace`.
    if type(exc).__module__ == "builtins":
        return None
    from errtrace.adapters.llm import translate_llm_exception

    return translate_llm_exception(exc)


def install_default_translators() -> None:
    """Translate LLM SDK exceptions (first) and httpx transport failures everywhere."""
    mapper.add_translator(_llm_translator)
    mapper.add_translator(_httpx_translator)
