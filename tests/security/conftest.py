"""Shared pieces of the isolation suite: one real gateway (SQLite, master key,
no anonymous access) in front of the fake upstream, and keys of two tenants,
the victim A and the attacker B, made like `seawall keys create` makes them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-isolation-7f3c9a"
UPSTREAM_KEY = "sk-upstream-secret-4b1d0e"


def config(upstream: FakeUpstreamClient, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "cache": {"enabled": True, "semantic": {"threshold": 0.8}},
        "providers": {"f": {"type": "openai", "base_url": upstream.base_url + "/v1",
                            "api_key": UPSTREAM_KEY}},
        "models": {"m": {"provider": "f", "model": "fake-1"},
                   "emb": {"provider": "f", "kind": "embedding", "model": "fake-embedding"}},
        "jobs": {"poll_s": 0.05, "lease_s": 2.0},
        **extra,
    }


@dataclass
class Tenant:
    """A tenant's key, with an httpx client and an openai client that use it."""

    name: str
    secret: str
    key_id: str
    http: httpx.Client
    sdk: openai.OpenAI


def make_tenant(gw: Running, tenant: str) -> Tenant:
    secret = "sk-sw-" + uuid.uuid4().hex + uuid.uuid4().hex[:16]
    key_id = "key_" + uuid.uuid4().hex[:8]
    gw.on_server(gw.services.store.create_key(ApiKey(
        id=key_id, name=f"{tenant}-app", tenant=tenant, key_hash=hash_key(secret),
        prefix=secret[:10], rpm=None, created_at=time.time())))
    headers = {"authorization": f"Bearer {secret}"}
    return Tenant(tenant, secret, key_id,
                  httpx.Client(base_url=gw.url, headers=headers, timeout=30),
                  openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0,
                                timeout=30))


def master_http(gw: Running) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"},
                        timeout=30)


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(config(upstream), tmp_path_factory.mktemp("security")) as running:
        yield running


@pytest.fixture(scope="module")
def alice(gw: Running) -> Tenant:
    """Tenant A, the victim."""
    return make_tenant(gw, "acme")


@pytest.fixture(scope="module")
def mallory(gw: Running) -> Tenant:
    """Tenant B, the attacker: a valid key of another tenant."""
    return make_tenant(gw, "globex")


@pytest.fixture(autouse=True)
def _echo(upstream: FakeUpstreamClient) -> None:
    upstream.reset()
    upstream.script(default={})  # echo the last user message


def settle(gw: Running) -> None:
    """Cache entries and trace records are written off the request path."""
    gw.on_server(gw.services.cache.settle())
    gw.on_server(gw.services.writer.flush())


def trace(gw: Running, trace_id: str) -> dict[str, Any] | None:
    gw.on_server(gw.services.writer.flush())
    return gw.on_server(gw.services.store.get_trace(trace_id))  # type: ignore[no-any-return]
