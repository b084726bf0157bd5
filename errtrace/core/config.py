"""errtrace's options: :class:`Config`, from keyword arguments, a YAML file and the env.

Precedence, highest first: keyword arguments, ``ERRTRACE_*`` environment variables, the
YAML file (``config_file=`` or ``ERRTRACE_CONFIG_FILE``), the defaults. Unknown keys and
bad values raise :class:`ConfigError` naming the key (and the file or variable).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errtrace.core.codes import short_repr
from errtrace.core.llm_hosts import HOST_RE, is_under, normalize_host
from errtrace.core.propagation import DEFAULT_BIZ_PATTERN, TOKEN_RE, PropagationSettings

ENV_PREFIX = "ERRTRACE_"
_HEADER_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}\Z")  # \Z: no final newline
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,80}\Z")  # a variable name shown as it is
THIRD_PARTY_MODES = ("traceparent", "none", "all")
"""The values of ``Config.third_party_propagation``."""


class ConfigError(ValueError):
    """Raised when an option is unknown or has a bad value."""


@dataclass(frozen=True)
class Config:
    """All errtrace options. Build with ``Config(...)`` or :meth:`Config.load`."""

    service_name: str = "unknown_service"
    """Names this service in error events and gRPC ErrorInfo metadata."""
    debug: bool = False
    """When true, exception text and provider messages are shown to clients. Never in prod."""
    biz_header: str = "X-Biz-Code"
    biz_pattern: str = DEFAULT_BIZ_PATTERN
    baggage_biz_key: str = "biz.code"
    trace_id_header: str = "X-Trace-ID"
    error_code_header: str = "X-Error-Code"
    error_level_header: str = "X-Error-Level"
    event_id_header: str = "X-Error-Event-ID"
    max_header_bytes: int = 8192
    """An inbound tracestate longer than this is dropped; baggage keeps the whole members
    that fit."""
    sample_new_traces: bool = True
    problem_type_base: str = "https://errtrace.dev/codes/"
    """``type`` of a problem+json body is this base followed by the code id."""
    sse_error_event: bool = True
    """After a ``text/event-stream`` response started, send a final ``event: error``."""
    rewrite_responses: bool | tuple[str, ...] = False
    """Classify free-text/un-coded error responses of the app: True, or path prefixes."""
    rewrite_max_body_bytes: int = 65536
    rules_file: str | None = None
    """A YAML file of classifier rules, loaded (and hot-reloaded) into the process-wide
    rule table when errtrace starts with this config; a bad file fails the start."""
    use_otel: bool | None = None
    """Take ids from the active OpenTelemetry span: None = when OpenTelemetry is installed."""
    exit_on_fatal: bool = False
    """Level 0 errors end the process (after responding) when true."""
    event_buffer_size: int = 1000
    log_errors: bool = True
    grpc_trace_id_on_success: bool = False
    """gRPC servers: put ``x-trace-id`` in the trailing metadata of successful calls too.
    Failed calls always carry it; on a success it costs one more trailer per call."""
    third_party_propagation: str = "traceparent"
    """What outgoing calls to a third party's API carry: ``"traceparent"`` (only that
    header: no ``tracestate``, ``baggage`` or business code), ``"none"``, or ``"all"``
    (the same as any other call). Third parties: the built-in LLM provider hosts, hosts
    added with ``add_llm_host(..., third_party=True)``, and ``third_party_hosts``."""
    third_party_hosts: tuple[str, ...] = ()
    """More third-party hosts (each with its subdomains), e.g. ``("api.stripe.com",)``."""

    def __post_init__(self) -> None:
        for name in ("biz_header", "trace_id_header", "error_code_header",
                     "error_level_header", "event_id_header"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEADER_RE.match(value):
                raise ConfigError(f"{name}: {short_repr(value)} is not a valid header name")
        try:
            re.compile(self.biz_pattern)
        except (re.error, TypeError, OverflowError, RecursionError) as exc:
            # OverflowError: a repeat count past re's limit; RecursionError: groups
            # nested deeper than re's compiler goes.
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise ConfigError(
                f"biz_pattern: {short_repr(self.biz_pattern)} is not a regex: {reason}"
            ) from None
        if self.biz_pattern != DEFAULT_BIZ_PATTERN:
            # It runs on a header of every request: a pattern that can backtrack
            # catastrophically would let one client stall the server.
            from errtrace.core._regex_safety import find_unsafe_construct

            problem = find_unsafe_construct(self.biz_pattern, fullmatch=True)
            if problem is not None:
                raise ConfigError(
                    f"biz_pattern: {short_repr(self.biz_pattern)} is unsafe: {problem}"
                )
        for name in ("max_header_bytes", "rewrite_max_body_bytes", "event_buffer_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {short_repr(value)} must be a positive integer")
        if isinstance(self.rewrite_responses, list):
            object.__setattr__(self, "rewrite_responses", tuple(self.rewrite_responses))
        rr = self.rewrite_responses
        if not isinstance(rr, bool) and not (
            isinstance(rr, tuple) and all(isinstance(p, str) and p.startswith("/") for p in rr)
        ):
            raise ConfigError(
                f"rewrite_responses: {short_repr(rr)} must be true/false or a list of path prefixes"
            )
        for name in ("debug", "sample_new_traces", "sse_error_event", "exit_on_fatal",
                     "log_errors", "grpc_trace_id_on_success"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: {short_repr(value)} must be true or false")
        if self.third_party_propagation not in THIRD_PARTY_MODES:
            raise ConfigError(
                f"third_party_propagation: {short_repr(self.third_party_propagation)} must "
                "be one of " + ", ".join(THIRD_PARTY_MODES)
            )
        hosts = self.third_party_hosts
        if isinstance(hosts, str):  # one host given as a string
            hosts = (hosts,)
        if not isinstance(hosts, (list, tuple)):
            raise ConfigError(
                f"third_party_hosts: {short_repr(hosts)} must be a list of host names"
            )
        names: list[str] = []
        for host in hosts:
            name = normalize_host(host) if isinstance(host, str) else ""
            if not HOST_RE.match(name):
                raise ConfigError(
                    f"third_party_hosts: {short_repr(host)} is not a host name "
                    "(no scheme, port or path)"
                )
            names.append(name)
        object.__setattr__(self, "third_party_hosts", tuple(names))
        if self.rules_file is not None and (
            not isinstance(self.rules_file, str) or not self.rules_file.strip()
        ):
            raise ConfigError(f"rules_file: {short_repr(self.rules_file)} is not a file path")
        if self.use_otel is not None and not isinstance(self.use_otel, bool):
            raise ConfigError(f"use_otel: {short_repr(self.use_otel)} must be true, false or null")
        for name in ("service_name", "problem_type_base", "baggage_biz_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name}: must be a non-empty string")
        if not TOKEN_RE.match(self.baggage_biz_key):
            # It is written into the outgoing baggage header, where a member whose key
            # is no token is dropped by every W3C parser: the biz code would be lost.
            raise ConfigError(
                f"baggage_biz_key: {short_repr(self.baggage_biz_key)} is not a valid "
                "baggage key (an RFC 7230 token)"
            )

    # -- derived -----------------------------------------------------------------------

    @functools.cached_property
    def propagation(self) -> PropagationSettings:
        """The settings extraction and injection use (built once, then a plain attribute)."""
        return PropagationSettings(
            biz_header=self.biz_header.lower(),
            biz_pattern=re.compile(self.biz_pattern),
            baggage_biz_key=self.baggage_biz_key,
            max_header_bytes=self.max_header_bytes,
            sample_new_traces=self.sample_new_traces,
        )

    def is_third_party_host(self, host: str) -> bool:
        """Whether ``host`` (lower case) is one of ``third_party_hosts`` or under one."""
        return any(is_under(host, name) for name in self.third_party_hosts)

    def rewrites(self, path: str) -> bool:
        """Whether error responses on ``path`` are classified and rewritten."""
        rr = self.rewrite_responses
        if isinstance(rr, bool):
            return rr
        return any(path.startswith(prefix) for prefix in rr)

    # -- loading -----------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        """The option names."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Config:
        """Merge defaults, a YAML file, ``ERRTRACE_*`` variables and keyword options.

        A bad value raises :class:`ConfigError` naming the option and where its value
        came from, e.g. ``max_header_bytes: 'abc' must be a positive integer (from
        errtrace.yaml)`` or ``(from environment variable ERRTRACE_MAX_HEADER_BYTES)``.
        """
        environ = os.environ if env is None else env
        merged: dict[str, Any] = {}
        source: dict[str, str] = {}  # option -> where its value came from; the last one wins
        file = config_file or environ.get(ENV_PREFIX + "CONFIG_FILE")
        if file:
            path = Path(file)
            from_file = cls._from_file(path)
            merged.update(from_file)
            source.update(dict.fromkeys(from_file, str(path)))
        from_env, variables = cls._from_env(environ)
        merged.update(from_env)
        source.update({name: f"environment variable {var}" for name, var in variables.items()})
        cls._check_keys(options, "keyword argument")
        merged.update(options)
        source.update(dict.fromkeys(options, "keyword argument"))
        try:
            return cls(**merged)
        except ConfigError as exc:
            # Every __post_init__ message starts with "<option>:".
            name = str(exc).split(":", 1)[0]
            if name not in source:
                raise
            raise ConfigError(f"{exc} (from {source[name]})") from None

    @classmethod
    def _check_keys(cls, data: Mapping[str, Any], what: str) -> None:
        names = cls.field_names()
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                extra = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown {what} {short_repr(key)}{extra}")

    @classmethod
    def _from_file(cls, path: Path) -> dict[str, Any]:
        from errtrace.core._yaml import load_yaml_file

        data = load_yaml_file(path)
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of options")
        section = data.get("errtrace", data)
        if not isinstance(section, Mapping):
            raise ConfigError(f"{path}: 'errtrace' must be a mapping of options")
        cls._check_keys(section, f"option in {path}:")
        return dict(section)

    @classmethod
    def _from_env(cls, environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        """The options set by ``ERRTRACE_*`` variables, and the variable each came from.

        The part after the prefix is matched case-insensitively, so ``ERRTRACE_DEBUG``
        and ``ERRTRACE_debug`` are the same option: both set is an error, since which
        one won would depend on the order of the environment.
        """
        variables: dict[str, str] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key in environ:
            if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG_FILE":
                continue
            name = key[len(ENV_PREFIX):].lower()
            if name not in types:
                close = difflib.get_close_matches(name, cls.field_names(), n=1)
                extra = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
                raise ConfigError(f"unknown environment variable {_var(key)}{extra}")
            if name in variables:
                first, second = sorted((variables[name], key))
                raise ConfigError(
                    f"environment variables {first} and {second} both set option {name}; "
                    "set only one"
                )
            variables[name] = key
        out = {
            name: _parse_env(key, environ[key], str(types[name]))
            for name, key in variables.items()
        }
        return out, variables


def _var(key: str) -> str:
    """An environment variable's name for a message: as it is if plain, else quoted."""
    return key if _PLAIN_NAME_RE.match(key) else short_repr(key)


def _parse_env(key: str, raw: str, type_name: str) -> Any:
    text = raw.strip()
    lowered = text.lower()
    if type_name.startswith("bool |") and "tuple" in type_name:  # rewrite_responses
        if lowered in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return lowered in ("1", "true", "yes", "on")
        return tuple(p.strip() for p in text.split(",") if p.strip())
    if type_name.startswith("bool"):
        if lowered in ("", "auto", "none") and "None" in type_name:
            return None
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: {short_repr(raw)} is not a boolean (true/false)")
    if type_name.startswith("tuple"):  # a comma-separated list
        return tuple(p.strip() for p in text.split(",") if p.strip())
    if type_name == "int":
        # ASCII only: int() also reads other scripts' digits ("١٢" is 12), which no one
        # means in a setting; a sign or "_" between digits stays int()'s to judge.
        try:
            if not text.isascii():
                raise ValueError(text)
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: {short_repr(raw)} is not an integer") from None
    return text
