"""Calls to a third party's API carry only what ``third_party_propagation`` allows.

A gateway (a real FastAPI app under ``errtrace.instrument``) receives a request with a
traceparent, a tracestate, baggage holding a user id, and a business code, then calls
out: its own services must get all four, an LLM provider (or a host listed in
``third_party_hosts``) by default only the traceparent. The calls go through
``errtrace.outgoing_headers(url)`` and through errtrace's httpx clients, to a real echo
app (over ``httpx.ASGITransport``, which lets the request keep a provider's host name,
and over a uvicorn server on 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

import errtrace
from errtrace.adapters import httpx as eh
from errtrace.adapters.llm import add_llm_host
from errtrace.core import llm_hosts
from errtrace.core import runtime as runtime_module
from errtrace.core.propagation import parse_traceparent

from .conftest import TRACE_ID, TRACEPARENT, uvicorn_server

INBOUND = {
    "traceparent": TRACEPARENT,
    "tracestate": "vendor=abc",
    "baggage": "user.id=42,tier=gold",
    "x-biz-code": "checkout.v2",
}
ALL_FOUR = {"traceparent", "tracestate", "baggage", "x-biz-code"}
CONTEXT_NAMES = ALL_FOUR


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _restore_hosts() -> Iterator[None]:
    domains, third = dict(llm_hosts._DOMAINS), set(llm_hosts._THIRD_PARTY)
    saved_default = runtime_module._default
    try:
        yield
    finally:
        llm_hosts._DOMAINS.clear()
        llm_hosts._DOMAINS.update(domains)
        llm_hosts._THIRD_PARTY.clear()
        llm_hosts._THIRD_PARTY.update(third)
        llm_hosts._third_party_seen.clear()
        runtime_module._default = saved_default


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({k: v for k, v in request.headers.items() if k in CONTEXT_NAMES})


ECHO = Starlette(routes=[Route("/{path:path}", _echo)])


def gateway(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/headers")
    async def headers(url: str | None = None) -> dict[str, str]:
        return errtrace.outgoing_headers(url)

    @app.get("/call")
    async def call(url: str) -> Any:
        async with eh.async_client(transport=httpx.ASGITransport(app=ECHO)) as client:
            return (await client.get(url)).json()

    @app.get("/call-sync")
    def call_sync(url: str) -> Any:  # run in the threadpool, the context copied
        with eh.client() as client:
            return client.get(url).json()

    return errtrace.instrument(app, service_name="gateway", **options)


async def ask(app: FastAPI, path: str, **params: str) -> dict[str, str]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get(path, params=params, headers=INBOUND)
    assert response.status_code == 200, response.text
    assert response.headers["x-trace-id"] == TRACE_ID
    body: dict[str, str] = response.json()
    return body


def continues_the_trace(headers: dict[str, str]) -> None:
    parsed = parse_traceparent(headers["traceparent"])
    assert parsed is not None and parsed[0] == TRACE_ID
    assert parsed[1] != TRACEPARENT.split("-")[2]  # a child span of this hop


OWN = "http://billing.internal/v1/charge"
PROVIDERS = [
    "https://api.openai.com/v1/chat/completions",
    "https://api.anthropic.com/v1/messages",
    "https://myres.openai.azure.com/openai/deployments/gpt/chat/completions",
    "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke",
    "https://us-central1-aiplatform.googleapis.com/v1/projects/p",
    "api.mistral.ai",  # a bare host
    "API.Groq.com:443",  # a host with a port, any case
    " api.openai.com ",  # spaces around, as an environment variable may have
    "https://bedrock-agent-runtime.us-east-1.amazonaws.com/agents/x",
    "https://bedrock-runtime.cn-north-1.amazonaws.com.cn/model/x/invoke",
    "https://vpce-0a1b-c2d3.bedrock-runtime.us-east-1.vpce.amazonaws.com/model/x",
    "https://myres.openai.azure.us/openai/deployments/gpt",
    "https://my-model.eastus2.models.ai.azure.com/v1/chat/completions",
    "https://codestral.mistral.ai/v1/fim/completions",
    "https://[api.openai.com/v1",  # unbalanced bracket: still the provider's host
    httpx.URL("https://api.openai.com/v1/models"),
]
LOOK_ALIKES = [
    "https://evilopenai.com/v1",
    "https://api.openai.com.evil.example/v1",
    "https://api.openai.com@evil.example/v1",  # userinfo: the host is evil.example
    "https://evil-openrouter.ai/api",  # "-" forms only under a provider's parent domain
]


def gateway_headers_for(url: object, **options: Any) -> dict[str, str]:
    """outgoing_headers(url) inside a request of an instrumented app (any url object)."""
    app = FastAPI()
    seen: dict[str, str] = {}

    @app.get("/")
    async def route() -> None:
        seen.update(errtrace.outgoing_headers(url))

    errtrace.instrument(app, service_name="gateway", **options)
    from starlette.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/", headers=INBOUND).status_code == 200
    return seen


@pytest.mark.parametrize("url", PROVIDERS, ids=str)
def test_a_provider_gets_only_the_traceparent(url: object) -> None:
    got = gateway_headers_for(url)
    assert set(got) == {"traceparent"}
    continues_the_trace(got)


@pytest.mark.parametrize("url", LOOK_ALIKES)
def test_look_alike_hosts_are_not_providers(url: str) -> None:
    assert set(gateway_headers_for(url)) == ALL_FOUR


def test_an_internationalised_host_matches_its_xn_form() -> None:
    got = gateway_headers_for("https://api.b\u00fccher.de/v1",
                              third_party_hosts=["api.xn--bcher-kva.de"])
    assert set(got) == {"traceparent"}


@pytest.mark.anyio
async def test_own_services_and_calls_without_a_url_get_the_whole_context() -> None:
    app = gateway()
    for params in ({"url": OWN}, {}):
        got = await ask(app, "/headers", **params)
        assert set(got) == ALL_FOUR
        continues_the_trace(got)
        assert got["tracestate"] == "vendor=abc"
        assert got["baggage"] == "user.id=42,tier=gold,biz.code=checkout.v2"
        assert got["x-biz-code"] == "checkout.v2"


@pytest.mark.anyio
async def test_modes_none_and_all() -> None:
    none = await ask(gateway(third_party_propagation="none"), "/headers", url=PROVIDERS[0])
    assert none == {}
    every = await ask(gateway(third_party_propagation="all"), "/headers", url=PROVIDERS[0])
    assert set(every) == ALL_FOUR
    # "none" leaves the own services alone.
    own = await ask(gateway(third_party_propagation="none"), "/headers", url=OWN)
    assert set(own) == ALL_FOUR


@pytest.mark.anyio
async def test_third_party_hosts_cover_their_subdomains_only() -> None:
    app = gateway(third_party_hosts=["api.stripe.com"])
    assert set(await ask(app, "/headers", url="https://eu.api.stripe.com/v1")) == {
        "traceparent"
    }
    assert set(await ask(app, "/headers", url="https://api.stripe.com/v1")) == {"traceparent"}
    # Not a suffix match on the bare string: a look-alike domain is not the listed one.
    assert set(await ask(app, "/headers", url="https://notapi.stripe.com/v1")) == ALL_FOUR


@pytest.mark.anyio
async def test_add_llm_host_is_own_unless_marked_third_party() -> None:
    # Asked before the host is added: the answer must not stick once it is.
    before = await ask(gateway(), "/headers", url="https://api.perplexity.ai/chat")
    assert set(before) == ALL_FOUR
    add_llm_host("vllm.internal", "vllm")
    add_llm_host("api.perplexity.ai", third_party=True)
    # An own gateway under a provider's domain: the most specific entry decides.
    add_llm_host("gw.openai.azure.com")
    app = gateway()
    assert set(await ask(app, "/headers", url="http://vllm.internal:8000/v1")) == ALL_FOUR
    assert set(await ask(app, "/headers", url="https://api.perplexity.ai/chat")) == {
        "traceparent"
    }
    assert set(await ask(app, "/headers", url="https://gw.openai.azure.com/x")) == ALL_FOUR
    assert set(await ask(app, "/headers", url="https://eu.gw.openai.azure.com/x")) == ALL_FOUR
    # Its errors are classified as its own provider's, not as Azure's.
    assert llm_hosts.provider_for_host("eu.gw.openai.azure.com") == "custom"
    assert llm_hosts.provider_for_host("other.openai.azure.com") == "azure"
    assert set(await ask(app, "/headers", url="https://other.openai.azure.com/x")) == {
        "traceparent"
    }
    for bad in ("  ", "https://api.x.ai", "api.perplexity.ai:443", "api.replicate.com/v1"):
        with pytest.raises(ValueError, match="not a host name"):
            add_llm_host(bad, third_party=True)


@pytest.mark.anyio
async def test_a_users_own_host_has_no_regional_dash_form() -> None:
    add_llm_host("gw.openai.azure.com")  # own
    app = gateway()
    assert set(await ask(app, "/headers", url="https://gw.openai.azure.com/x")) == ALL_FOUR
    # Someone else's Azure resource whose name ends like it stays a provider's.
    assert set(await ask(app, "/headers", url="https://evil-gw.openai.azure.com/x")) == {
        "traceparent"
    }


@pytest.mark.anyio
async def test_the_httpx_adapter_sends_a_provider_only_the_traceparent() -> None:
    app = gateway()
    seen = await ask(app, "/call", url="https://api.openai.com/v1/models")
    assert set(seen) == {"traceparent"}
    continues_the_trace(seen)
    own = await ask(app, "/call", url=OWN)
    assert set(own) == ALL_FOUR
    none = await ask(gateway(third_party_propagation="none"), "/call",
                     url="https://api.openai.com/v1/models")
    assert none == {}


@pytest.mark.anyio
async def test_the_sync_httpx_adapter_over_a_real_server() -> None:
    with uvicorn_server(ECHO) as url:
        listed = await ask(gateway(third_party_hosts=["127.0.0.1"]), "/call-sync", url=url)
        plain = await ask(gateway(), "/call-sync", url=url)
    assert set(listed) == {"traceparent"}
    continues_the_trace(listed)
    assert set(plain) == ALL_FOUR


async def _redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params["to"], status_code=307)


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "wanted"), [("traceparent", {"traceparent"}), ("none", set())])
async def test_headers_set_by_anyone_are_removed_for_a_provider(
    mode: str, wanted: set[str]
) -> None:
    """A gateway that forwards the inbound headers, a caller's own business code, and a
    redirect from an own service (httpx copies the first request's headers): the
    provider gets only what the mode allows, and a traceparent only errtrace's."""
    echo = Starlette(routes=[
        Route("/redirect", _redirect), Route("/{path:path}", _echo),
    ])
    app = FastAPI()
    provider = "https://api.openai.com/v1/models"

    @app.get("/forward")
    async def forward(request: Request) -> Any:
        inbound = {k: v for k, v in request.headers.items() if k in CONTEXT_NAMES}
        async with eh.async_client(transport=httpx.ASGITransport(app=echo)) as client:
            return (await client.get(provider, headers=inbound)).json()

    @app.get("/redirected")
    async def redirected() -> Any:
        async with eh.async_client(
            transport=httpx.ASGITransport(app=echo), follow_redirects=True
        ) as client:
            response = await client.get("http://billing.internal/redirect",
                                        params={"to": provider})
            assert response.history and response.history[0].status_code == 307
            return response.json()

    errtrace.instrument(app, service_name="gateway", third_party_propagation=mode)
    for path in ("/forward", "/redirected"):
        seen = await ask(app, path)
        assert set(seen) == wanted, path
        if wanted:
            continues_the_trace(seen)  # errtrace's, not the forwarded inbound one


def test_outgoing_headers_rejects_a_url_that_is_no_string() -> None:
    with pytest.raises(TypeError, match="url must be a string or a URL"):
        errtrace.outgoing_headers(b"https://api.openai.com")
