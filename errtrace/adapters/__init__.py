"""Adapters to outside libraries (httpx, OpenTelemetry, LLM SDK exceptions, ...)."""
