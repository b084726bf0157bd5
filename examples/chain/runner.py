"""Start and stop the three services on 127.0.0.1 (free ports), in this process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import grpc.aio
import uvicorn
from werkzeug.serving import BaseWSGIServer, make_server

from examples.chain import gateway, model, orchestrator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _AioModel:
    """A grpc.aio server on its own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.server: grpc.aio.Server | None = None
        self.thread = threading.Thread(target=self._run, name="model-aio", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.server, self.port = model.aio_server()
        await self.server.start()

    def start(self) -> int:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the aio model server did not start")
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class Chain:
    """gateway (uvicorn) -> orchestrator (werkzeug, threaded) -> model (gRPC sync or aio)."""

    def __init__(self, model_mode: str = "aio") -> None:
        if model_mode not in ("aio", "sync"):
            raise ValueError("model_mode is 'aio' or 'sync'")
        self.model_mode = model_mode
        self._stops: list[Any] = []
        self.gateway_url = ""
        self.orchestrator_url = ""
        self.model_target = ""

    def start(self) -> Chain:
        """Start the three servers, bottom up; returns self once all accept calls."""
        if self.model_mode == "aio":
            aio = _AioModel()
            port = aio.start()
            self._stops.append(aio.stop)
        else:
            sync, port = model.sync_server()
            sync.start()
            self._stops.append(lambda: sync.stop(0).wait(10))
        self.model_target = f"127.0.0.1:{port}"

        wsgi: BaseWSGIServer = make_server(
            "127.0.0.1", 0, orchestrator.create_app(self.model_target), threaded=True
        )
        threading.Thread(target=wsgi.serve_forever, name="orchestrator", daemon=True).start()
        self._stops.append(wsgi.shutdown)
        self.orchestrator_url = f"http://127.0.0.1:{wsgi.server_port}"

        port = _free_port()
        app = gateway.create_app(self.orchestrator_url)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="gateway", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)

        def stop_gateway() -> None:
            server.should_exit = True
            thread.join(10)

        self._stops.append(stop_gateway)
        self.gateway_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop everything, top down."""
        while self._stops:
            self._stops.pop()()

    def __enter__(self) -> Chain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
