"""A service for the official W3C Trace Context test harness (Level 2, strict).

It uses only ``errtrace.instrument()`` and ``errtrace.outgoing_headers()``: the harness
POSTs a list of ``{"url": ..., "arguments": [...]}`` actions; for each, this service
POSTs ``arguments`` to ``url`` carrying the propagated context.

Run it, then point the harness at it::

    python examples/w3c_harness_service.py --port 5000
    STRICT_LEVEL=2 python test/test.py http://127.0.0.1:5000/test
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

import errtrace

app = errtrace.instrument(FastAPI(), service_name="w3c-harness-service")


@app.post("/test")
async def test(request: Request) -> dict[str, int]:
    actions: Any = await request.json()
    if not isinstance(actions, list):
        actions = [actions] if actions else []
    async with httpx.AsyncClient(timeout=5) as client:
        for action in actions:
            await client.post(
                action["url"],
                json=action.get("arguments") or [],
                headers=errtrace.outgoing_headers(),
            )
    return {"calls": len(actions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
