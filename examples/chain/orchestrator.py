"""The ``orchestrator`` service: Flask, calling the model over gRPC.

``POST /generate`` with ``{"prompt": ...}``. A failed model call comes back from
errtrace's gRPC client interceptor as an ``AppError`` with the model's code, level and
event id; it escapes the view and errtrace answers with it, linking the model's event.
"""

from __future__ import annotations

from typing import Any

import grpc
from flask import Flask, request

import errtrace
from examples.chain.model import METHOD, decode, encode
from examples.chain.trail import hop

SERVICE_NAME = "orchestrator"


def create_app(model_target: str) -> Flask:
    """The Flask app, calling the model service at ``model_target`` (host:port)."""
    channel = grpc.intercept_channel(
        grpc.insecure_channel(model_target), *errtrace.grpc_client_interceptors()
    )
    generate = channel.unary_unary(
        METHOD, request_serializer=encode, response_deserializer=decode
    )
    app = Flask(SERVICE_NAME)

    @app.post("/generate")
    def generate_view() -> dict[str, Any]:
        body = request.get_json(silent=True) or {}
        hop(SERVICE_NAME, "calling model")
        answer: dict[str, Any] = generate({"prompt": body.get("prompt", "")}, timeout=5)
        hop(SERVICE_NAME, "model answered")
        return {"text": answer.get("text"), "via": SERVICE_NAME}

    return errtrace.instrument(app, service_name=SERVICE_NAME)
