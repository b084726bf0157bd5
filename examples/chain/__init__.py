"""Three services, one error context: FastAPI gateway -> Flask orchestrator -> gRPC model.

``gateway`` (FastAPI, uvicorn) validates a chat request and calls ``orchestrator`` over
HTTP with errtrace's httpx client; ``orchestrator`` (Flask, a threaded WSGI server) calls
the ``model`` service over gRPC with errtrace's client interceptors; ``model`` (grpc.aio
or sync grpc) answers or fails. Each service logs through ``trail`` with errtrace's
``ContextFilter``, so every hop's log line carries the trace id, span id and biz code.
"""
