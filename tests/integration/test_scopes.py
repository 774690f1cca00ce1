"""Roles, scopes and the key lifecycle against a real gateway, as a hostile
tenant would try them: the official openai and anthropic SDKs (and httpx for
the admin API) ask a gateway in front of the fake provider. Every denial is
checked for its status, its shape and that it names what is missing; every
allowed path for its answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.gateway import Running, run_gateway

MASTER = "sk-master-scopes-0001"

CONFIG: dict[str, Any] = {
    "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
    "observe": {"traces": {"flush_interval_s": 0.01}},
    "providers": {"fake": {"type": "fake"}},
    "models": {
        "echo": {"provider": "fake"},
        "other": {"provider": "fake"},
        "embed": {"provider": "fake", "kind": "embedding"},
    },
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with run_gateway(CONFIG, tmp_path_factory.mktemp("scopes")) as running:
        yield running


def _admin(gw: Running, method: str, path: str, secret: str = MASTER,
           **kw: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"authorization": f"Bearer {secret}"},
                         timeout=30, **kw)


def mint(gw: Running, by: str = MASTER, **body: Any) -> tuple[str, dict[str, Any]]:
    """(secret, key object) of a key made through POST /admin/keys."""
    r = _admin(gw, "POST", "/admin/keys", by, json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    return out.pop("secret"), out


def oai(gw: Running, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)


def chat(gw: Running, secret: str, model: str = "echo", **kw: Any) -> str:
    answer = oai(gw, secret).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], **kw)
    return answer.choices[0].message.content or ""


def test_a_key_limited_to_other_models_gets_403_naming_the_model(gw: Running) -> None:
    secret, key = mint(gw, name="only-other", tenant="acme", models=["other"])
    assert key["models"] == ["other"] and "secret" not in key
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(gw, secret, "echo")
    assert e.value.status_code == 403 and e.value.code == "model_not_allowed"
    assert "'echo'" in e.value.message and "other" in e.value.message
    assert isinstance(e.value.body, dict) and e.value.body["type"] == "permission_error"
    assert chat(gw, secret, "other")  # the allowed model answers
    assert [m.id for m in oai(gw, secret).models.list()] == ["other"]
    # The master key still sees and uses everything.
    assert {m.id for m in oai(gw, MASTER).models.list()} >= {"echo", "other", "embed"}


def test_the_messages_api_refuses_in_the_anthropic_shape(gw: Running) -> None:
    secret, _ = mint(gw, name="only-other-2", tenant="acme", models=["other"])
    client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client.messages.create(model="echo", max_tokens=20,
                               messages=[{"role": "user", "content": "hi"}])
    body = e.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "permission_error" and "'echo'" in body["error"]["message"]
    ok = client.messages.create(model="other", max_tokens=20,
                                messages=[{"role": "user", "content": "hi"}])
    assert ok.content


def test_each_endpoint_needs_its_scope(gw: Running) -> None:
    secret, key = mint(gw, name="embed-only", tenant="acme", scopes=["embeddings"])
    assert key["scopes"] == ["embeddings"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(gw, secret)
    assert e.value.code == "missing_scope" and "'chat'" in e.value.message
    vec = oai(gw, secret).embeddings.create(model="embed", input="hello")
    assert len(vec.data[0].embedding) > 0
    r = httpx.post(gw.url + "/v1/feedback", json={"request_id": "x", "score": 1},
                   headers={"authorization": f"Bearer {secret}"}, timeout=30)
    assert r.status_code == 403 and "'feedback'" in r.json()["error"]["message"]
    r = httpx.get(gw.url + "/v1/batches", headers={"authorization": f"Bearer {secret}"},
                  timeout=30)
    assert r.status_code == 403 and "'jobs'" in r.json()["error"]["message"]


def test_an_app_key_reads_but_does_not_write_collections_by_default(gw: Running) -> None:
    secret, key = mint(gw, name="reader", tenant="acme")
    assert key["scopes"] == ["chat", "embeddings", "rag:read", "feedback", "jobs"]
    h = {"authorization": f"Bearer {secret}"}
    r = httpx.post(gw.url + "/v1/collections/notes/documents", headers=h, timeout=30,
                   json={"documents": [{"text": "x", "source": "a.md"}]})
    assert r.status_code == 403 and "'rag:write'" in r.json()["error"]["message"]
    r = httpx.delete(gw.url + "/v1/collections/notes", headers=h, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    r = httpx.get(gw.url + "/v1/collections", headers=h, timeout=30)
    assert r.status_code == 200


def test_collections_read_and_write_lists_are_enforced(gw: Running) -> None:
    writer, _ = mint(gw, name="notes-writer", tenant="coll",
                     scopes=["rag:read", "rag:write", "chat"],
                     collections_read=["notes"], collections_write=["notes"])
    h = {"authorization": f"Bearer {writer}"}
    docs = {"documents": [{"text": "The tower is 330 metres tall.", "source": "t.md"}]}
    r = httpx.post(gw.url + "/v1/collections/notes/documents", headers=h, json=docs,
                   timeout=120)
    assert r.status_code == 200, r.text
    r = httpx.post(gw.url + "/v1/collections/handbook/documents", headers=h, json=docs,
                   timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "collection_not_allowed"
    assert "'handbook'" in r.json()["error"]["message"]
    # The operator makes a second collection in the same tenant, through a tenant_admin.
    admin, _ = mint(gw, name="coll-admin", tenant="coll", role="tenant_admin")
    r = httpx.post(gw.url + "/v1/collections/handbook/documents", json=docs, timeout=120,
                   headers={"authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    listed = httpx.get(gw.url + "/v1/collections", headers=h, timeout=30).json()
    assert [c["name"] for c in listed["data"]] == ["notes"]  # handbook is not shown
    r = httpx.post(gw.url + "/v1/collections/handbook/search", headers=h, timeout=30,
                   json={"query": "tower", "mode": "bm25"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "collection_not_allowed"
    r = httpx.post(gw.url + "/v1/collections/notes/search", headers=h, timeout=30,
                   json={"query": "tower", "mode": "bm25"})
    assert r.status_code == 200 and r.json()["data"]
    # Retrieval inside a chat request checks the same list.
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(gw, writer, extra_body={"rag": {"collection": "handbook", "mode": "bm25"}})
    assert e.value.code == "collection_not_allowed"
    assert chat(gw, writer, extra_body={"rag": {"collection": "notes", "mode": "bm25"}})


def test_admin_endpoints_confine_a_tenant_admin_to_its_tenant(gw: Running) -> None:
    app_key, _ = mint(gw, name="plain", tenant="acme")
    r = _admin(gw, "GET", "/admin/keys", app_key)
    assert r.status_code == 403 and "'admin:keys'" in r.json()["error"]["message"]
    boss, _ = mint(gw, name="acme-boss", tenant="acme", role="tenant_admin")
    globex, globex_key = mint(gw, name="globex-bot", tenant="globex")
    listed = _admin(gw, "GET", "/admin/keys", boss)
    assert listed.status_code == 200
    assert {k["tenant"] for k in listed.json()["data"]} == {"acme"}
    assert boss not in listed.text and "key_hash" not in listed.text
    everything = _admin(gw, "GET", "/admin/keys").json()["data"]
    assert {"acme", "globex"} <= {k["tenant"] for k in everything}
    # Another tenant's key is not found, by id or by name, for every action.
    for which in (globex_key["id"], "globex-bot"):
        for method, path in (("GET", ""), ("POST", "/revoke"), ("POST", "/rotate")):
            r = _admin(gw, method, f"/admin/keys/{which}{path}", boss)
            assert r.status_code == 404, (which, path, r.text)
    assert chat(gw, globex)  # still alive
    # It cannot mint keys in another tenant, operator keys, or scopes it lacks.
    r = _admin(gw, "POST", "/admin/keys", boss, json={"name": "x", "tenant": "globex"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_not_allowed"
    r = _admin(gw, "POST", "/admin/keys", boss, json={"name": "x", "role": "operator"})
    assert r.status_code == 400
    narrow, _ = mint(gw, boss, name="narrow-boss", role="tenant_admin",
                     scopes=["admin:keys", "chat"])
    r = _admin(gw, "POST", "/admin/keys", narrow, json={"name": "y", "scopes": ["embeddings"]})
    assert r.status_code == 403 and "embeddings" in r.json()["error"]["message"]
    made, made_key = mint(gw, boss, name="acme-made")  # its own tenant by default
    assert made_key["tenant"] == "acme" and chat(gw, made)
    # Operator-wide endpoints stay the operator's.
    r = _admin(gw, "GET", "/admin/cache", boss)
    assert r.status_code == 403 and r.json()["error"]["code"] == "operator_only"
    r = _admin(gw, "POST", "/admin/cache/purge", boss, json={"tenant": "globex"})
    assert r.status_code == 404
    r = _admin(gw, "POST", "/admin/cache/purge", boss, json={"all": True})
    assert r.status_code == 200  # confined to acme's entries


def test_budgets_through_the_admin_api(gw: Running) -> None:
    boss, _ = mint(gw, name="budget-boss", tenant="budgeta", role="tenant_admin")
    app, key = mint(gw, boss, name="budget-app")
    r = _admin(gw, "POST", f"/admin/keys/{key['id']}/budget", boss,
               json={"usd": 0, "period": "day"})
    assert r.status_code == 200 and r.json()["budget_usd"] == 0
    line = r.json()["budgets"][0]
    assert line["budget"] == "key 'budget-app'" and line["period"] == "day"
    assert line["resets_at"].endswith("T00:00:00Z")
    with pytest.raises(openai.RateLimitError) as e:  # $0: spent from the first request
        chat(gw, app)
    assert e.value.code == "budget_exceeded"
    assert e.value.response.headers["x-seawall-budget-reset"] == line["resets_at"]
    r = _admin(gw, "POST", f"/admin/keys/{key['id']}/budget", boss, json={"none": True})
    assert r.json()["budget_usd"] is None and r.json()["budgets"] == []
    assert chat(gw, app)
    assert _admin(gw, "POST", f"/admin/keys/{key['id']}/budget", boss,
                  json={}).status_code == 400
    # A tenant's budget: the operator sets it; its tenant_admin only reads it.
    r = _admin(gw, "POST", "/admin/tenants/budgeta/budget", boss, json={"usd": 5})
    assert r.status_code == 403 and r.json()["error"]["code"] == "operator_only"
    r = _admin(gw, "POST", "/admin/tenants/budgeta/budget", json={"usd": 0, "period": "month"})
    assert r.status_code == 200 and r.json()["budget_source"] == "store"
    with pytest.raises(openai.RateLimitError) as e:
        chat(gw, app)
    assert "for tenant 'budgeta'" in e.value.message
    shown = _admin(gw, "GET", "/admin/tenants/budgeta", boss).json()
    assert shown["keys"] == 2 and shown["budgets"][0]["usd"] == 0
    assert _admin(gw, "GET", "/admin/tenants/globex", boss).status_code == 404
    _admin(gw, "POST", "/admin/tenants/budgeta/budget", json={"none": True})
    assert chat(gw, app)
    # Every change is in the audit log; the tenant_admin reads its tenant's part.
    log = _admin(gw, "GET", "/admin/audit?tenant=budgeta&limit=100", boss).json()["data"]
    seen = [(e["action"], e["actor"]["role"]) for e in reversed(log)]
    assert seen == [("key.create", "operator"), ("key.create", "tenant_admin"),
                    ("key.budget", "tenant_admin"), ("key.budget", "tenant_admin"),
                    ("tenant.budget", "operator"), ("tenant.budget", "operator")]
    assert log[0]["before"]["budget_usd"] == 0 and log[0]["after"]["budget_usd"] is None
    assert _admin(gw, "GET", "/admin/audit?tenant=acme", boss).status_code == 403


def test_trace_records_of_another_tenant_are_not_found(gw: Running) -> None:
    boss, _ = mint(gw, name="traces-boss", tenant="tracea", role="tenant_admin")
    own, _ = mint(gw, name="traces-app", tenant="tracea")
    theirs, _ = mint(gw, name="traces-other", tenant="traceb")
    mine = oai(gw, own).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "a"}]).headers["x-request-id"]
    other = oai(gw, theirs).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "b"}]).headers["x-request-id"]
    gw.on_server(gw.services.writer.flush())
    assert _admin(gw, "GET", f"/admin/traces/{mine}", boss).status_code == 200
    assert _admin(gw, "GET", f"/admin/traces/{other}", boss).status_code == 404
    assert _admin(gw, "GET", f"/admin/traces/{other}").status_code == 200  # the operator
    assert _admin(gw, "GET", f"/admin/traces/{mine}", own).status_code == 403


def test_rotation_keeps_both_secrets_for_the_grace_then_only_the_new(gw: Running) -> None:
    first, key = mint(gw, name="rotating", tenant="acme")
    r = _admin(gw, "POST", f"/admin/keys/{key['id']}/rotate", json={"grace": "1h"})
    assert r.status_code == 200
    second = r.json()["secret"]
    assert second != first and r.json()["previous_secret_valid_until"] > time.time() + 3000
    assert chat(gw, first) and chat(gw, second)
    r = _admin(gw, "POST", f"/admin/keys/{key['id']}/rotate", json={"grace": "0s"})
    third = r.json()["secret"]
    for gone in (first, second):
        with pytest.raises(openai.AuthenticationError):
            chat(gw, gone)
    assert chat(gw, third)
    r = _admin(gw, "POST", f"/admin/keys/{key['id']}/rotate", json={"grace": "31d"})
    assert r.status_code == 400
    log = _admin(gw, "GET", "/admin/audit?action=key.rotate").json()["data"]
    mine = [e for e in log if e["target"] == key["id"]]
    assert len(mine) == 2 and mine[0]["after"]["prefix"] == third[:10]
    assert all(third not in str(e) and second not in str(e) for e in log)  # no secrets


def test_expired_and_revoked_keys_are_refused_at_once(gw: Running) -> None:
    r = _admin(gw, "POST", "/admin/keys", json={"name": "old", "tenant": "acme",
                                                "expires": "2020-01-01"})
    assert r.status_code == 400 and "past" in r.json()["error"]["message"]
    secret, key = mint(gw, name="short-lived", tenant="acme", expires="2s")
    assert chat(gw, secret)  # now cached by the gateway
    time.sleep(max(0.0, key["expires_at"] - time.time()) + 0.2)
    with pytest.raises(openai.AuthenticationError) as e:
        chat(gw, secret)
    assert "expired" in e.value.message
    doomed, key = mint(gw, name="doomed", tenant="acme")
    assert chat(gw, doomed)
    assert _admin(gw, "POST", f"/admin/keys/{key['id']}/revoke").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(gw, doomed)


def test_reserved_tenants_are_refused(gw: Running) -> None:
    for body in ({"name": "default"}, {"name": "x", "tenant": "anonymous"},
                 {"name": "y", "tenant": "Default"}):
        r = _admin(gw, "POST", "/admin/keys", json=body)
        assert r.status_code == 400 and "reserved" in r.json()["error"]["message"], body
    # A key stored in the master key's tenant before names were reserved.
    secret = "sk-sw-legacy-default-tenant-key-000"
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_legacy_default", name="default", tenant="default", key_hash=hash_key(secret),
        prefix=secret[:10], rpm=None, created_at=time.time())))
    with pytest.raises(openai.AuthenticationError) as e:
        chat(gw, secret)
    assert "reserved tenant" in e.value.message


def test_a_legacy_key_keeps_every_non_admin_scope(gw: Running) -> None:
    secret = "sk-sw-legacy-acme-key-0000000000"
    gw.on_server(gw.services.store.create_key(ApiKey(
        id="key_legacy_acme", name="legacy", tenant="legacy", key_hash=hash_key(secret),
        prefix=secret[:10], rpm=None, created_at=time.time())))
    assert chat(gw, secret)
    h = {"authorization": f"Bearer {secret}"}
    r = httpx.delete(gw.url + "/v1/collections/none-yet", headers=h, timeout=30)
    assert r.status_code == 404  # past the scope check (rag:write): no such collection
    assert _admin(gw, "GET", "/admin/keys", secret).status_code == 403


@pytest.fixture(scope="module")
def open_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """No master key: keyless loopback callers are served (the laptop setup)."""
    config = {**CONFIG, "auth": {"allow_anonymous_loopback": True}}
    with run_gateway(config, tmp_path_factory.mktemp("open")) as running:
        yield running


def test_a_presented_key_must_be_valid_even_on_anonymous_loopback(open_gw: Running) -> None:
    r = httpx.post(open_gw.url + "/v1/chat/completions", timeout=30,
                   json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200  # no key at all: anonymous
    assert chat(open_gw, "unused-on-loopback")  # the SDKs' "no key" placeholder (README)
    for token in ("garbage", "sk-sw-not-a-real-key", "sk-master-guess"):
        with pytest.raises(openai.AuthenticationError):
            chat(open_gw, token)


@pytest.mark.parametrize("header", [("x-forwarded-for", "127.0.0.1"),
                                    ("forwarded", "for=127.0.0.1"),
                                    ("x-real-ip", "::1")])
def test_a_forwarded_request_is_never_anonymous_loopback(open_gw: Running,
                                                         header: tuple[str, str]) -> None:
    """A request that came through a proxy is not known to be local, whatever
    its headers claim: refused without a key (and /metrics with it)."""
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(open_gw.url + "/v1/chat/completions", json=body, timeout=30,
                   headers=dict([header]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(open_gw.url + "/admin/keys", headers=dict([header]),
                     timeout=30).status_code == 401  # not the operator either
    assert httpx.get(open_gw.url + "/admin/keys", timeout=30).status_code == 200
    assert httpx.get(open_gw.url + "/metrics", headers=dict([header]),
                     timeout=30).status_code == 401
    assert httpx.get(open_gw.url + "/metrics", timeout=30).status_code == 200


def test_the_key_lifecycle_on_postgres(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    """The same admin API and checks on the shared store (Postgres + Redis)."""
    config = {**CONFIG, "store": {"kind": "postgres", "url": pg_url},
              "redis": {"url": redis_url}}
    with run_gateway(config, tmp_path) as pg:
        boss, _ = mint(pg, name="pg-boss", tenant="acme", role="tenant_admin")
        app, key = mint(pg, boss, name="pg-app", models=["other"], expires="1d",
                        collections_read=["notes"])
        assert key["tenant"] == "acme" and key["collections_read"] == ["notes"]
        _, other = mint(pg, name="pg-other", tenant="globex")
        with pytest.raises(openai.PermissionDeniedError):
            chat(pg, app, "echo")
        assert chat(pg, app, "other")
        listed = _admin(pg, "GET", "/admin/keys", boss).json()["data"]
        assert {k["name"] for k in listed} == {"pg-boss", "pg-app"}
        assert _admin(pg, "GET", f"/admin/keys/{other['id']}", boss).status_code == 404
        r = _admin(pg, "POST", f"/admin/keys/{key['id']}/rotate", boss, json={"grace": "0s"})
        assert r.status_code == 200
        with pytest.raises(openai.AuthenticationError):
            chat(pg, app, "other")
        assert chat(pg, r.json()["secret"], "other")
        assert _admin(pg, "POST", "/admin/keys/pg-app/revoke", boss).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            chat(pg, r.json()["secret"], "other")


def test_the_audit_log_says_when_an_admin_request_came_through_a_proxy(gw: Running) -> None:
    r = httpx.post(gw.url + "/admin/keys", json={"name": "proxied", "tenant": "acme"},
                   headers={"authorization": f"Bearer {MASTER}", "x-forwarded-for": "10.9.8.7"},
                   timeout=30)
    assert r.status_code == 201
    log = _admin(gw, "GET", "/admin/audit?action=key.create").json()["data"]
    row = next(e for e in log if e["target"] == r.json()["id"])
    assert row["source"] == "forwarded:127.0.0.1"  # the proxy's address, not the claim
