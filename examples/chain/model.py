"""The ``model`` service: gRPC (sync or grpc.aio), JSON messages, no generated code.

Method ``/chain.Model/Generate`` takes ``{"prompt": ...}`` and answers ``{"text": ...}``.
Some prompts fail on purpose, the way a model server fails in production:

``rate``   the provider rate-limits us            -> AppError("LLM_RATE_LIMITED")
``long``   the provider answers in free text      -> classified: LLM_CONTEXT_LENGTH_EXCEEDED
``crash``  a bug deep in the runtime              -> unhandled: INTERNAL, nothing leaked
"""

from __future__ import annotations

import json
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

import errtrace
from examples.chain.trail import hop

METHOD = "/chain.Model/Generate"
SERVICE_NAME = "model"
PROVIDER_CONTEXT_ERROR = (
    "Error code: 400 - {'error': {'message': \"This model's maximum context length is 8192 "
    "tokens. However, you requested 9001 tokens (8000 in the messages, 1001 in the "
    "completion). Please reduce the length of the messages or completion.\", 'type': "
    "'invalid_request_error', 'param': 'messages', 'code': 'context_length_exceeded'}}"
)


def encode(message: dict[str, Any]) -> bytes:
    """JSON message -> bytes on the wire."""
    return json.dumps(message).encode()


def decode(data: bytes) -> dict[str, Any]:
    """Bytes on the wire -> JSON message."""
    value = json.loads(data)
    return value if isinstance(value, dict) else {}


def generate(request: dict[str, Any]) -> dict[str, Any]:
    """The model's behaviour (shared by the sync and the aio server)."""
    prompt = str(request.get("prompt", ""))
    hop(SERVICE_NAME, f"generate prompt={prompt[:20]!r}")
    if prompt == "rate":
        raise errtrace.AppError(
            "LLM_RATE_LIMITED", "The model provider is rate limiting this service.",
            details={"retry_after": 2},
        )
    if prompt == "long":
        found = errtrace.classify(PROVIDER_CONTEXT_ERROR, status=400, provider="openai")
        raise errtrace.AppError(found.code, details=found.details)
    if prompt == "crash":
        raise RuntimeError("CUDA error: illegal memory access (weights at /secret/path)")
    return {"text": f"echo: {prompt}"}


def _sync_handler(request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
    return generate(request)


async def _aio_handler(request: dict[str, Any], context: Any) -> dict[str, Any]:
    return generate(request)


def _handlers(handler: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "chain.Model",
        {"Generate": grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=decode, response_serializer=encode,
        )},
    )


def sync_server() -> tuple[grpc.Server, int]:
    """A sync gRPC model server on 127.0.0.1 (not started): (server, port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=errtrace.grpc_server_interceptors(service_name=SERVICE_NAME),
    )
    server.add_generic_rpc_handlers((_handlers(_sync_handler),))
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


def aio_server() -> tuple[grpc.aio.Server, int]:
    """A grpc.aio model server on 127.0.0.1 (not started; create it inside its loop)."""
    server = grpc.aio.server(
        interceptors=errtrace.grpc_aio_server_interceptors(service_name=SERVICE_NAME)
    )
    server.add_generic_rpc_handlers((_handlers(_aio_handler),))
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port
