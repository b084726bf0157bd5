"""Compressed error bodies through the httpx adapter: decoded, and bounded in memory.

An error body is read up to ``MAX_ERROR_BODY`` decoded bytes. A dependency that answers
with a small gzip body inflating to tens of megabytes (a "zip bomb") must not cost the
caller more memory than an ordinary 1 MiB body; the peak is measured with tracemalloc,
over a real uvicorn server (sync client) and ``httpx.ASGITransport`` (async client).
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import errtrace
from errtrace.adapters import httpx as eh

from .conftest import uvicorn_server

CODED = b'{"code": "X_ZIPPED", "message": "compressed", "event_id": "evt-z"}'
BOMB_BYTES = 64 * 1024 * 1024
"""What the bombs inflate to: 64 times the bytes the adapter keeps."""
PEAK_LIMIT = 12 * 1024 * 1024
"""Most bytes a bounded read may allocate at once (1 MiB kept, slices of 64 KiB)."""


def _gzip_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


GZIP_BOMB = _gzip_zeros(BOMB_BYTES)
LARGE_TEXT = b"".join(b"line %07d of a long upstream error\n" % i for i in range(90_000))

BODIES: dict[str, tuple[bytes, str]] = {
    "gzip": (gzip.compress(CODED), "gzip"),
    "x-gzip": (gzip.compress(CODED), "x-gzip"),
    "deflate": (zlib.compress(CODED), "deflate"),
    "raw-deflate": (_raw_deflate(CODED), "deflate"),
    "twice": (gzip.compress(gzip.compress(CODED)), "gzip, gzip"),
    "unknown-coding": (gzip.compress(CODED), "gzip, x-unknown"),
    "large": (gzip.compress(LARGE_TEXT), "gzip"),
    "corrupt": (gzip.compress(CODED)[:12] + b"\xff" * 40, "gzip"),
    "bomb": (GZIP_BOMB, "gzip"),
    "double-bomb": (gzip.compress(GZIP_BOMB), "gzip, gzip"),
}


async def compressed(request: Request) -> Response:
    body, coding = BODIES[request.path_params["name"]]
    return Response(body, status_code=500, media_type="application/json",
                    headers={"Content-Encoding": coding})


def make_app() -> Starlette:
    return Starlette(routes=[Route("/c/{name}", compressed)])


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with uvicorn_server(make_app()) as base:
        yield base


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _response(err: errtrace.AppError) -> httpx.Response:
    cause = err.__cause__
    assert isinstance(cause, httpx.HTTPStatusError)
    return cause.response


def _get(url: str, name: str) -> errtrace.AppError:
    with eh.client(base_url=url) as client, pytest.raises(errtrace.AppError) as info:
        client.get(f"/c/{name}")
    return info.value


async def _aget(name: str) -> errtrace.AppError:
    transport = httpx.ASGITransport(app=make_app())
    async with eh.async_client(transport=transport, base_url="http://up") as client:
        with pytest.raises(errtrace.AppError) as info:
            await client.get(f"/c/{name}")
    return info.value


@pytest.mark.parametrize("name", ["gzip", "x-gzip", "deflate", "raw-deflate", "twice",
                                  "unknown-coding"])
def test_each_coding_is_decoded_to_the_remote_code(url: str, name: str) -> None:
    err = _get(url, name)
    assert err.code == "X_ZIPPED"
    response = _response(err)
    assert response.content == CODED
    assert "content-encoding" not in response.headers


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["gzip", "raw-deflate", "twice"])
async def test_each_coding_is_decoded_by_the_async_client(name: str) -> None:
    err = await _aget(name)
    assert err.code == "X_ZIPPED"
    assert _response(err).content == CODED


def test_a_large_compressed_body_keeps_its_first_mib(url: str) -> None:
    response = _response(_get(url, "large"))
    assert len(LARGE_TEXT) > eh.MAX_ERROR_BODY
    assert response.content == LARGE_TEXT[: eh.MAX_ERROR_BODY]


def test_a_corrupt_body_still_gives_the_status_error(url: str) -> None:
    err = _get(url, "corrupt")
    assert err.code == "UPSTREAM_ERROR"
    assert err.details["upstream_status"] == 500
    assert _response(err).is_closed


def _peak(call: Any) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["bomb", "double-bomb"])
def test_a_compression_bomb_costs_no_more_than_the_bytes_kept(url: str, name: str) -> None:
    peak, err = _peak(lambda: _get(url, name))
    content = _response(err).content
    assert content == bytes(eh.MAX_ERROR_BODY)  # the first MiB of zeros, no more
    assert err.code == "UPSTREAM_ERROR"
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB while reading a bomb"


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["bomb", "double-bomb"])
async def test_a_compression_bomb_is_bounded_on_the_async_client(name: str) -> None:
    tracemalloc.start()
    try:
        err = await _aget(name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _response(err).content == bytes(eh.MAX_ERROR_BODY)
    assert peak < PEAK_LIMIT + len(GZIP_BOMB), f"peak {peak / 2**20:.1f} MiB"
