"""gRPC server and client interceptors, sync and ``grpc.aio`` (the ``errtrace[grpc]`` extra).

::

    server = grpc.server(pool, interceptors=errtrace.grpc_server_interceptors())
    server = grpc.aio.server(interceptors=errtrace.grpc_aio_server_interceptors())
    channel = grpc.intercept_channel(channel, *errtrace.grpc_client_interceptors())
    channel = grpc.aio.insecure_channel(
        target, interceptors=errtrace.grpc_aio_client_interceptors()
    )

Servers read ``traceparent``/``tracestate``/``baggage``/``x-biz-code`` from the
invocation metadata exactly as the HTTP middlewares read headers, and answer errors with
the code's gRPC status plus ``grpc-status-details-bin`` (``google.rpc.Status`` with
``ErrorInfo`` and ``RetryInfo``). Clients send the context and raise
:class:`~errtrace.AppError` for failed calls. Options are those of ``errtrace.instrument``:
``runtime=``, ``config=`` or :class:`~errtrace.Config` keyword options.
"""

from __future__ import annotations

from typing import Any

try:
    import grpc  # noqa: F401
    from google.rpc import status_pb2  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f'gRPC support needs the grpc extra: pip install "errtrace[grpc]" ({exc})'
    ) from exc

from errtrace.core.config import Config
from errtrace.core.errors import mapper
from errtrace.core.runtime import Runtime, resolve_runtime
from errtrace.grpc_interceptors._aio_client import AIO_KINDS, AioClientInterceptor
from errtrace.grpc_interceptors._aio_server import AioServerInterceptor
from errtrace.grpc_interceptors._client import ClientInterceptor
from errtrace.grpc_interceptors._metadata import MetadataGetter, MetadataSetter
from errtrace.grpc_interceptors._server import ServerInterceptor
from errtrace.grpc_interceptors._status import (
    decode_status,
    error_from_status_exception,
    error_status,
)

__all__ = [
    "AioClientInterceptor",
    "AioServerInterceptor",
    "ClientInterceptor",
    "MetadataGetter",
    "MetadataSetter",
    "ServerInterceptor",
    "aio_client_interceptors",
    "aio_server_interceptors",
    "client_interceptors",
    "decode_status",
    "error_status",
    "server_interceptors",
]

# A handler's exception carrying its own gRPC status (grpc-interceptor's NotFound...)
# answers with that status, here and on any transport.
mapper.add_translator(error_from_status_exception)


def _client_runtime(
    runtime: Runtime | None, config: Config | None, options: dict[str, Any]
) -> Runtime | None:
    # Without options a client follows the runtime of the request it is called from
    # (the app's), like errtrace.outgoing_headers().
    if runtime is None and config is None and not options:
        return None
    return resolve_runtime(runtime, config, options)


def server_interceptors(
    *, runtime: Runtime | None = None, config: Config | None = None, **options: Any
) -> list[Any]:
    """Interceptors for ``grpc.server(..., interceptors=...)``."""
    return [ServerInterceptor(resolve_runtime(runtime, config, options))]


def aio_server_interceptors(
    *, runtime: Runtime | None = None, config: Config | None = None, **options: Any
) -> list[Any]:
    """Interceptors for ``grpc.aio.server(interceptors=...)``."""
    return [AioServerInterceptor(resolve_runtime(runtime, config, options))]


def client_interceptors(
    *, runtime: Runtime | None = None, config: Config | None = None, **options: Any
) -> list[Any]:
    """Interceptors for ``grpc.intercept_channel(channel, *interceptors)``."""
    return [ClientInterceptor(_client_runtime(runtime, config, options))]


def aio_client_interceptors(
    *, runtime: Runtime | None = None, config: Config | None = None, **options: Any
) -> list[Any]:
    """Interceptors for ``grpc.aio.insecure_channel(..., interceptors=...)``."""
    chosen = _client_runtime(runtime, config, options)
    # One object per kind: grpc.aio files an interceptor under one kind only.
    return [kind(chosen) for kind in AIO_KINDS]
