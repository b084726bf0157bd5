"""httpx: carry the error context into outgoing calls and decode error responses back.

::

    from errtrace.adapters import httpx as errtrace_httpx

    client = errtrace_httpx.client(base_url="http://billing", timeout=5)        # sync
    aclient = errtrace_httpx.async_client(base_url="http://billing")            # async
    errtrace_httpx.instrument_client(existing_client)                           # in place
    httpx.Client(transport=errtrace_httpx.ErrtraceTransport(inner_transport))  # by hand

Every request gets the W3C ``traceparent`` of a fresh child span of the current
request's span (``errtrace.current()``; outside a request, a new trace per call), its
``tracestate``, ``baggage`` and the business-code header, through the core
:func:`~errtrace.core.propagation.inject`. A call to a third party's API (a known LLM
provider host, ``Config.third_party_hosts``) gets only what
``Config.third_party_propagation`` allows: by default the ``traceparent`` alone; its
``tracestate``, ``baggage`` and business-code header are removed, even when the caller
set them (or forwarded them from the inbound request) or a redirect copied them.

Header precedence: ``traceparent`` and ``tracestate`` are always errtrace's, replacing
any value the caller set, because a forwarded inbound ``traceparent`` would name the
caller's caller as the parent and break the trace. A caller's ``tracestate`` is
removed even when errtrace's context has none to send: W3C Trace Context pairs it
with the traceparent it came with. ``baggage`` and the business-code header set
explicitly by the caller are kept: a gateway may call a downstream on behalf of
another tenant on purpose (not on a third party's API, above).

With ``raise_errors=True`` (the default) a response with status >= 400 is turned into
an :class:`~errtrace.AppError` raised from an :class:`httpx.HTTPStatusError`:

* problem+json, a JSON body with a ``code`` (top level or ``{"error": {"code": ...}}``)
  or an ``X-Error-Code`` header keep the remote code, level, message, event id and the
  ``caused_by`` chain (:func:`~errtrace.core.encoding.from_http_response`);
* otherwise, for a host that looks like an LLM provider (or with ``llm_provider=``),
  the body is classified by :mod:`errtrace.core.rewrite` into an ``LLM_*`` code;
* otherwise the status decides: 408/504 -> ``TIMEOUT``, 429/503 ->
  ``UPSTREAM_UNAVAILABLE``, anything else -> ``UPSTREAM_ERROR``.

``details["upstream_status"]`` keeps the status and ``details["retry_after"]`` the
``Retry-After`` seconds. At most the first 1 MiB of an error body is read (gzip and
deflate are inflated by the adapter a slice at a time, so a compression bomb stops
there too; ``br`` and ``zstd`` are left to httpx, which inflates each network chunk
whole); the response is then closed (its connection returns to the pool or is
dropped) and the ``HTTPStatusError``'s ``response`` is a closed copy whose ``.content``
holds the bytes read (decoded, so without ``Content-Encoding``). Its ``request``, ``headers``,
``elapsed`` and (on an instrumented client) redirect ``history`` are kept, as with
``raise_for_status()``.

Transport failures become ``TIMEOUT`` (any :class:`httpx.TimeoutException`, connect
timeouts included) or ``UPSTREAM_UNAVAILABLE`` (connection refused or reset, protocol
errors of the peer, proxy errors), raised ``from`` the httpx exception; on a call to an
LLM provider (judged as for error bodies, ``llm_provider=``) they are ``LLM_TIMEOUT``
and ``LLM_CONNECTION_ERROR``, as an LLM SDK's own would be. Errors that are
the caller's own (an unsupported URL scheme, a local protocol error) pass unchanged.
This holds after the headers too: a body that stalls or is cut short by the peer
raises the same way, whether the client reads it (``get``, ``post`` ...) or the caller
does (``client.stream(...)`` with ``iter_bytes``/``aiter_bytes``, ``read``/``aread``).
httpx closes the response as it would for its own error.

The adapter raises; it does not record an event: the error reaches application code,
and if nothing handles it the middleware records it once, with the chain.

On a client from :func:`client`, :func:`async_client` or :func:`instrument_client`,
the error is raised by the client's ``send`` once its auth and redirect flow is done:
an auth that answers a 401 challenge and retries (``httpx.DigestAuth``) works, and
only the final response can raise. The transports read and close an error response
there and hand the client a closed copy holding the bounded body. A response event
hook that calls ``raise_for_status()`` on that copy raises the same AppError rather
than a bare ``HTTPStatusError`` (httpx runs hooks before it records the redirect
history, so that error's response has none). An :class:`ErrtraceTransport` put on a
plain client by hand raises inside the transport, before any auth flow or hook sees
the response; with a retrying auth, use an instrumented client, or
``raise_errors=False`` plus :func:`error_from_response`.
"""

from __future__ import annotations

import importlib.util
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('httpx support needs the httpx extra: pip install "errtrace[httpx]"') from exc

from errtrace.core.encoding import (
    error_for_upstream_status,
    from_http_response,
    parse_retry_after,
)
from errtrace.core.errors import AppError
from errtrace.core.llm_hosts import provider_for_host, provider_request_id
from errtrace.core.propagation import TRACEPARENT, TRACESTATE
from errtrace.core.runtime import inject_current

__all__ = [
    "MAX_ERROR_BODY",
    "AsyncErrtraceTransport",
    "ErrtraceTransport",
    "HttpxHeadersSetter",
    "async_client",
    "client",
    "error_from_exception",
    "error_from_response",
    "httpx_setter",
    "inject_request",
    "instrument_client",
    "llm_provider_for",
]

MAX_ERROR_BODY = 1_048_576
"""Bytes of an error response body read for decoding; the rest is never downloaded."""

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)


# --- injection ------------------------------------------------------------------------


class HttpxHeadersSetter:
    """Setter over :class:`httpx.Headers` (case-insensitive, replaces repeated values).

    ``traceparent`` and ``tracestate`` always replace what is there; other headers
    (``baggage``, the business code) are written only when the caller did not set them.
    """

    def set(self, carrier: httpx.Headers, key: str, value: str) -> None:
        """Set ``key`` to ``value`` in ``carrier`` under the precedence above.

        Writing ``traceparent`` also drops any ``tracestate`` already there: W3C Trace
        Context ties the vendor state to the traceparent it came with, so a caller's
        value must not ride along with errtrace's new one. The context's own
        ``tracestate``, if it has one, is written right after the traceparent.
        """
        if key == TRACEPARENT:
            carrier.pop(TRACESTATE, None)
        elif key != TRACESTATE and key in carrier:
            return
        carrier[key] = value


httpx_setter = HttpxHeadersSetter()


def inject_request(request: httpx.Request) -> str | None:
    """Write the current error context into ``request``'s headers; returns its span id
    (None when nothing was written: a third party's API with
    ``third_party_propagation="none"``).

    Outside a request (no current context) the call starts a new trace of its own. A
    call to a third party's API carries only what ``Config.third_party_propagation``
    allows (by default the ``traceparent``): the other context headers are removed
    from it, whoever set them. That covers a redirect from one of your services to a
    provider, whose request httpx builds with the first request's headers.
    """
    headers = request.headers
    # The host as sent (IDNA names in their xn-- form), the form third-party lists use.
    host = request.url.raw_host.decode("ascii", "replace")
    return inject_current(
        headers, httpx_setter, host=host, remove=lambda name: headers.pop(name, None)
    )


# --- transport failures ---------------------------------------------------------------

# Looked up along the exception's MRO, so the most specific entry wins.
_EXCEPTION_CODES: dict[type[Exception], str] = {
    # A connect timeout is still "the peer did not answer in time", like a read timeout.
    httpx.TimeoutException: "TIMEOUT",
    # ConnectError, ReadError, WriteError, CloseError: the peer is down or went away.
    httpx.NetworkError: "UPSTREAM_UNAVAILABLE",
    httpx.RemoteProtocolError: "UPSTREAM_UNAVAILABLE",
    httpx.ProxyError: "UPSTREAM_UNAVAILABLE",
}


def error_from_exception(exc: BaseException) -> AppError | None:
    """The :class:`AppError` for an httpx transport failure, or None for other exceptions.

    ``TIMEOUT`` for timeouts, ``UPSTREAM_UNAVAILABLE`` for network, remote protocol and
    proxy errors; the exception becomes the cause. Its text (host names, addresses)
    stays in the cause, never in the client-visible message. Fits
    ``errtrace.core.errors.mapper.add_translator`` as is.
    """
    for klass in type(exc).__mro__:
        code = _EXCEPTION_CODES.get(klass)
        if code is not None:
            return AppError(code, None, cause=exc)
    return None


# A transport failure on a call to an LLM provider: the LLM codes, as for an SDK's.
_LLM_TRANSPORT_CODES = {"TIMEOUT": "LLM_TIMEOUT", "UPSTREAM_UNAVAILABLE": "LLM_CONNECTION_ERROR"}


def _raise_translated(
    exc: httpx.TransportError, request: httpx.Request, llm_provider: bool | str | None
) -> NoReturn:
    # httpx attaches the request only in the client, after the transport returned;
    # attach it now so the cause is complete for whoever inspects it.
    exc.request = request
    err = error_from_exception(exc)
    if err is None:
        raise exc
    if llm_provider is not False and (
        llm_provider is True or isinstance(llm_provider, str)
        or llm_provider_for(request.url) is not None
    ):
        err = AppError(_LLM_TRANSPORT_CODES.get(err.code, err.code), None, cause=exc)
    raise err from exc


class _Body(httpx.SyncByteStream):
    """A response body whose transport failures raise as their :class:`AppError`.

    The transport returns once the headers are in; the body is read later, by the
    client or by the caller, and can still time out or be cut short by the peer.
    """

    def __init__(
        self, inner: httpx.SyncByteStream, request: httpx.Request, llm: bool | str | None
    ) -> None:
        self.inner = inner
        self.request = request
        self.llm = llm

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.inner
        except httpx.TransportError as exc:
            _raise_translated(exc, self.request, self.llm)

    def close(self) -> None:
        try:
            self.inner.close()
        except httpx.TransportError as exc:
            _raise_translated(exc, self.request, self.llm)


class _AsyncBody(httpx.AsyncByteStream):
    """The async :class:`_Body`."""

    def __init__(
        self, inner: httpx.AsyncByteStream, request: httpx.Request, llm: bool | str | None
    ) -> None:
        self.inner = inner
        self.request = request
        self.llm = llm

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner:
                yield chunk
        except httpx.TransportError as exc:
            _raise_translated(exc, self.request, self.llm)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        except httpx.TransportError as exc:
            _raise_translated(exc, self.request, self.llm)


# --- error responses ------------------------------------------------------------------

def llm_provider_for(url: httpx.URL) -> str | None:
    """The LLM provider whose API ``url`` points at, judged by host (and Ollama's port)."""
    return provider_for_host(url.host, url.port)


def _classified(
    status: int, headers: httpx.Headers, body: bytes, provider: str | None
) -> AppError | None:
    # Hook to the LLM free-text classifier. Imported here, not at the top, because it is
    # optional for this adapter and compiles its rule table on first use.
    try:
        from errtrace.core.rewrite import from_response
    except ImportError:
        return None
    found = from_response(status, body, headers.get("content-type"), provider=provider)
    details: dict[str, Any] = dict(found.details)
    # The same keys as an LLM SDK's error gives (errtrace.adapters.llm), so that events
    # of both paths are found the same way.
    details["provider_status"] = status
    request_id = provider_request_id(headers.get)
    if request_id is not None:
        details["provider_request_id"] = request_id
    # Provider text may quote the prompt or keys: private (leading "_"), kept for events.
    details["_provider_text"] = found.text
    details["_classifier_rule"] = found.rule
    return AppError(found.code, None, details=details)


def _decode(
    request: httpx.Request,
    status: int,
    headers: httpx.Headers,
    body: bytes,
    *,
    service: str | None,
    llm_provider: bool | str | None,
) -> AppError:
    lowered = dict(headers.items())  # httpx gives lower-case names, repeated ones joined
    err = from_http_response(status, lowered, body, service=service or request.url.host or None)
    if err is None and llm_provider is not False:
        if isinstance(llm_provider, str):
            provider: str | None = llm_provider
        else:
            provider = llm_provider_for(request.url)
        if provider is not None or llm_provider is True:
            err = _classified(status, headers, body, provider)
    if err is None:
        err = error_for_upstream_status(status)
    err.details.setdefault("upstream_status", status)
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is not None and err.retry_after is None:
        err.details["retry_after"] = retry_after
    return err


def error_from_response(
    response: httpx.Response,
    *,
    service: str | None = None,
    llm_provider: bool | str | None = None,
) -> AppError:
    """The :class:`AppError` an error response describes (see the module docstring).

    Use it with ``raise_errors=False`` or any plain httpx client. The body is decoded
    when it was read (``response.read()`` / ``await response.aread()``); an unread
    streaming response is decoded from its headers and status alone. ``service`` names
    the peer in the ``caused_by`` chain when its body does not (default: the host).
    ``llm_provider``: None detects LLM provider hosts, a name forces classification as
    that provider (a self-hosted vLLM, say), True classifies always, False never.
    """
    try:
        body = response.content
    except httpx.ResponseNotRead:
        body = b""
    return _decode(
        response.request, response.status_code, response.headers, body[:MAX_ERROR_BODY],
        service=service, llm_provider=llm_provider,
    )


def _closed_copy(
    request: httpx.Request, response: httpx.Response, body: bytes, elapsed: timedelta
) -> httpx.Response:
    # A closed copy holding what was read, so that `.content` works on it. The body is
    # already decoded: drop the headers that describe the encoded one. Raw bytes:
    # header values need not be ASCII, and re-encoding text would fail.
    headers = [
        (k, v) for k, v in response.headers.raw
        if k.lower() not in (b"content-encoding", b"content-length", b"transfer-encoding")
    ]
    extensions = dict(response.extensions)
    extensions.pop(_DEFERRED, None)
    copy = httpx.Response(
        response.status_code, headers=headers, content=body, request=request,
        extensions=extensions,
    )
    # The client times a response when its stream closes; this copy is born closed, so
    # it would never get `.elapsed`: give it the time the transport measured.
    copy.elapsed = elapsed
    return copy


def _status_error(response: httpx.Response) -> httpx.HTTPStatusError:
    # The error raise_for_status() would give for this (closed copy of a) response; it
    # keeps the response itself, so its history, elapsed time and request stay readable.
    request = response.request
    kind = "Client error" if response.status_code < 500 else "Server error"
    message = f"{kind} '{response.status_code} {response.reason_phrase}' for url '{request.url}'"
    return httpx.HTTPStatusError(message, request=request, response=response)


# The extension key that marks an error response whose AppError the client's `send`
# raises after its auth and redirect flow (its value: the transport's _Options).
_DEFERRED = "errtrace.deferred_error"


class _Options:
    """What the sync and async transports share."""

    def __init__(
        self, raise_errors: bool, service: str | None, llm_provider: bool | str | None
    ) -> None:
        self.raise_errors = raise_errors
        self.service = service
        self.llm_provider = llm_provider
        self.defer = False
        """Set by :func:`instrument_client`: hand error responses to the client's send."""

    def answer(
        self, request: httpx.Request, response: httpx.Response, body: bytes, started: float
    ) -> httpx.Response:
        """An error response's bounded copy, marked for the client's send (deferred).

        ``started`` is the ``time.perf_counter()`` reading taken before the request went
        out, as the client itself takes it.
        """
        elapsed = timedelta(seconds=time.perf_counter() - started)
        copy = _closed_copy(request, response, body, elapsed)
        if not self.defer:
            raise self.http_error(copy)
        copy.extensions[_DEFERRED] = self
        return copy

    def wants_error(self, response: httpx.Response) -> bool:
        return self.raise_errors and response.status_code >= 400

    def http_error(self, response: httpx.Response) -> AppError:
        """The decoded error of a closed copy made by :func:`_closed_copy`, raised from
        the ``HTTPStatusError`` that holds that copy."""
        err = _decode(
            response.request, response.status_code, response.headers, response.content,
            service=self.service, llm_provider=self.llm_provider,
        )
        err.__cause__ = _status_error(response)
        return err


class _Inflater:
    """Undoes gzip and deflate content codings a slice at a time, keeping at most
    ``MAX_ERROR_BODY`` bytes of output, so that a small compressed body that inflates
    to gigabytes (a "zip bomb") costs no more memory than a plain 1 MiB one.

    httpx itself inflates each network chunk whole before its reader sees it; the
    error readers below take the raw bytes and inflate them here instead.
    """

    STEP = 65_536
    """Most bytes one stage inflates per call."""

    def __init__(self, codings: list[str]) -> None:
        # Content-Encoding lists codings in the order they were applied: undo from last.
        self.stages = [_Stage(name) for name in reversed(codings)]
        self.chunks: list[bytes] = []
        self.size = 0
        self.broken = False

    @property
    def full(self) -> bool:
        return self.size >= MAX_ERROR_BODY or self.broken

    def feed(self, data: bytes) -> None:
        """Inflate ``data`` (raw bytes off the wire) until the output is full."""
        try:
            self._feed(0, data)
        except zlib.error:
            self.broken = True  # a body we cannot decode: keep what came before

    def _feed(self, index: int, data: bytes) -> None:
        if index == len(self.stages):
            self.chunks.append(data)
            self.size += len(data)
            return
        stage = self.stages[index]
        pending = stage.tail + data if stage.tail else data
        while not self.full:
            out = stage.inflate(pending, self.STEP)
            pending = stage.tail
            stage.tail = b""
            if not out:
                break  # this stage needs more input
            self._feed(index + 1, out)
        stage.tail = pending

    def body(self) -> bytes:
        return b"".join(self.chunks)[:MAX_ERROR_BODY]


class _Stage:
    """One content coding undone with :mod:`zlib`. ``deflate`` is the zlib format by
    RFC 9110, but some servers send raw deflate data: that is tried when the zlib
    header does not parse, as browsers and httpx do."""

    def __init__(self, coding: str) -> None:
        self.raw_fallback = coding == "deflate"
        wbits = zlib.MAX_WBITS if self.raw_fallback else zlib.MAX_WBITS | 16
        self.obj = zlib.decompressobj(wbits)
        self.tail = b""

    def inflate(self, data: bytes, most: int) -> bytes:
        try:
            out = self.obj.decompress(data, most)
        except zlib.error:
            if not self.raw_fallback:
                raise
            self.obj = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self.obj.decompress(data, most)
        self.raw_fallback = False
        self.tail = self.obj.unconsumed_tail
        return out


_INFLATED = frozenset({"gzip", "x-gzip", "deflate"})
_HTTPX_DECODES = frozenset(
    name for name, modules in (("br", ("brotli", "brotlicffi")), ("zstd", ("zstandard",)))
    if any(importlib.util.find_spec(module) for module in modules)
)
"""The other codings httpx decodes, as it decides: when their package is installed."""


def _inflater(response: httpx.Response) -> _Inflater | None:
    """An inflater for the response's content codings, or None when httpx must decode
    them itself (a coding other than gzip and deflate it supports, such as ``br`` with
    the brotli package installed). Codings httpx does not know are skipped, as it
    skips them."""
    codings: list[str] = []
    for value in response.headers.get_list("content-encoding", split_commas=True):
        name = value.strip().lower()
        if name in _INFLATED:
            codings.append("gzip" if name == "x-gzip" else name)
        elif name in _HTTPX_DECODES:
            return None
    return _Inflater(codings)


def _read_bounded(response: httpx.Response) -> bytes:
    inflater = _inflater(response)
    if inflater is None:
        return _read_decoded(response)
    # iter_raw is a generator; close it explicitly when stopping early.
    stream = cast(Generator[bytes, None, None], response.iter_raw())
    try:
        for chunk in stream:
            inflater.feed(chunk)
            if inflater.full:
                break
    finally:
        stream.close()
        response.close()
    return inflater.body()


async def _aread_bounded(response: httpx.Response) -> bytes:
    inflater = _inflater(response)
    if inflater is None:
        return await _aread_decoded(response)
    stream = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    try:
        async for chunk in stream:
            inflater.feed(chunk)
            if inflater.full:
                break
    finally:
        # An unfinished async generator left to the garbage collector warns; close it.
        await stream.aclose()
        await response.aclose()
    return inflater.body()


def _read_decoded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    stream = cast(Generator[bytes, None, None], response.iter_bytes())
    try:
        for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY:
                break
    except httpx.DecodingError:
        pass  # a body we cannot decode: headers and status still tell the error
    finally:
        stream.close()
        response.close()
    return b"".join(chunks)[:MAX_ERROR_BODY]


async def _aread_decoded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    stream = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
    try:
        async for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY:
                break
    except httpx.DecodingError:
        pass
    finally:
        await stream.aclose()
        await response.aclose()
    return b"".join(chunks)[:MAX_ERROR_BODY]


# --- transports -----------------------------------------------------------------------


class ErrtraceTransport(httpx.BaseTransport):
    """Sync transport wrapper: injects the context, raises :class:`AppError` on errors.

    ``inner`` defaults to ``httpx.HTTPTransport()``. See the module docstring for
    ``raise_errors``, ``service`` and ``llm_provider``.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        raise_errors: bool = True,
        service: str | None = None,
        llm_provider: bool | str | None = None,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.options = _Options(raise_errors, service, llm_provider)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the inner transport with the context injected."""
        inject_request(request)
        started = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
            if not self.options.wants_error(response):
                # The body is read after this returns: its failures must raise as these
                # do. A stream of the wrong kind is left for the client to report.
                if isinstance(response.stream, httpx.SyncByteStream):
                    response.stream = _Body(response.stream, request, self.options.llm_provider)
                return response
            body = _read_bounded(response)
        except httpx.TransportError as exc:
            _raise_translated(exc, request, self.options.llm_provider)
        return self.options.answer(request, response, body, started)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncErrtraceTransport(httpx.AsyncBaseTransport):
    """Async transport wrapper: injects the context, raises :class:`AppError` on errors.

    ``inner`` defaults to ``httpx.AsyncHTTPTransport()``; ``httpx.ASGITransport`` works
    too. See the module docstring for the options.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        raise_errors: bool = True,
        service: str | None = None,
        llm_provider: bool | str | None = None,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.options = _Options(raise_errors, service, llm_provider)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the inner transport with the context injected."""
        inject_request(request)
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
            if not self.options.wants_error(response):
                if isinstance(response.stream, httpx.AsyncByteStream):
                    llm = self.options.llm_provider
                    response.stream = _AsyncBody(response.stream, request, llm)
                return response
            body = await _aread_bounded(response)
        except httpx.TransportError as exc:
            _raise_translated(exc, request, self.options.llm_provider)
        return self.options.answer(request, response, body, started)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


# --- clients --------------------------------------------------------------------------


def instrument_client(
    client: ClientT,
    *,
    raise_errors: bool = True,
    service: str | None = None,
    llm_provider: bool | str | None = None,
) -> ClientT:
    """Wrap an existing ``httpx.Client`` / ``AsyncClient``'s transports in place.

    The default transport and every mounted one (proxies included) are wrapped, so
    the client's own ``verify``, ``limits``, ``http2`` and proxy settings stay in
    force. Transports already wrapped are left as they are, so calling it twice is
    harmless. httpx has no public setter for a client's transport: this replaces the
    ``_transport`` and ``_mounts`` attributes, as OpenTelemetry's httpx
    instrumentation does; a client without them raises TypeError. With
    ``raise_errors`` the client's ``send`` is wrapped too (on this instance), so that
    an error response raises after the auth and redirect flow.
    """
    if not (hasattr(client, "_transport") and hasattr(client, "_mounts")):
        raise TypeError("this httpx version keeps no _transport/_mounts on its clients")
    wrapper: type[AsyncErrtraceTransport] | type[ErrtraceTransport]
    if isinstance(client, httpx.AsyncClient):
        wrapper = AsyncErrtraceTransport
    elif isinstance(client, httpx.Client):
        wrapper = ErrtraceTransport
    else:
        raise TypeError(f"not an httpx client: {type(client).__name__}")

    def wrap(inner: Any) -> Any:
        if inner is None or isinstance(inner, wrapper):
            return inner
        transport = wrapper(
            inner, raise_errors=raise_errors, service=service, llm_provider=llm_provider
        )
        transport.options.defer = raise_errors
        return transport

    target: Any = client  # the same two private attributes on both client classes
    target._transport = wrap(target._transport)
    target._mounts = {pattern: wrap(t) for pattern, t in target._mounts.items()}
    if raise_errors and not getattr(target.send, "_errtrace", False):
        target.send = _raising_send(target.send, asynchronous=wrapper is AsyncErrtraceTransport)
    return client


def _raise_deferred(response: httpx.Response) -> None:
    options = response.extensions.pop(_DEFERRED, None)
    if isinstance(options, _Options):
        # The response is the transport's closed copy, now with the client's history.
        raise options.http_error(response)


def _from_hook(exc: httpx.HTTPStatusError) -> Exception:
    # A response event hook calling raise_for_status() (a common httpx idiom) raises
    # before send returns: translate it into the error errtrace would have raised (the
    # hook's status error, about the same copy, as its cause), so the remote code
    # survives. Status errors about responses errtrace did not mark pass unchanged.
    options = exc.response.extensions.pop(_DEFERRED, None)
    if not isinstance(options, _Options):
        return exc
    err = options.http_error(exc.response)
    err.__cause__ = exc
    return err


def _raising_send(send: Any, *, asynchronous: bool) -> Any:
    """``send`` that raises a deferred error once the auth and redirect flow is done."""
    if asynchronous:

        async def async_send(*args: Any, **kwargs: Any) -> httpx.Response:
            try:
                response: httpx.Response = await send(*args, **kwargs)
            except httpx.HTTPStatusError as exc:
                raise _from_hook(exc)  # noqa: B904 - the cause is set there
            _raise_deferred(response)
            return response

        async_send._errtrace = True  # type: ignore[attr-defined]
        return async_send

    def sync_send(*args: Any, **kwargs: Any) -> httpx.Response:
        try:
            response: httpx.Response = send(*args, **kwargs)
        except httpx.HTTPStatusError as exc:
            raise _from_hook(exc)  # noqa: B904 - the cause is set there
        _raise_deferred(response)
        return response

    sync_send._errtrace = True  # type: ignore[attr-defined]
    return sync_send


def client(
    *,
    raise_errors: bool = True,
    service: str | None = None,
    llm_provider: bool | str | None = None,
    **httpx_client_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client(**httpx_client_kwargs)`` with errtrace on all its transports."""
    return instrument_client(
        httpx.Client(**httpx_client_kwargs),
        raise_errors=raise_errors, service=service, llm_provider=llm_provider,
    )


def async_client(
    *,
    raise_errors: bool = True,
    service: str | None = None,
    llm_provider: bool | str | None = None,
    **httpx_client_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient(**httpx_client_kwargs)`` with errtrace on its transports."""
    return instrument_client(
        httpx.AsyncClient(**httpx_client_kwargs),
        raise_errors=raise_errors, service=service, llm_provider=llm_provider,
    )
