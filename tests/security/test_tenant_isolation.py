"""Tenant isolation, tried as an attacker: tenant B (``mallory``, a valid key
of tenant globex) tries to read or change what tenant A (``alice``, acme)
made, through every client route of a real gateway. Each attempt must get
the documented answer (404 for another tenant's object, as for an unknown
one, so ids cannot be probed; 403 naming the scope for an admin route) and must change
nothing: the state is checked afterwards, not only the status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.gateway import Running
from tests.security.conftest import MASTER, Tenant, master_http, settle, trace
from tests.servers import FakeUpstreamClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, upstream: FakeUpstreamClient,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The shared gateway, once on each store backend: the stores' tenant
    filters are separate code on each."""
    from tests.gateway import run_gateway
    from tests.security.conftest import config
    from tests.services import create_database

    cfg = config(upstream)
    if request.param == "postgres":
        url = create_database(request.getfixturevalue("pg_server"),
                              template=request.getfixturevalue("pg_template"))
        cfg["store"] = {"kind": "postgres", "url": url}
    with run_gateway(cfg, tmp_path_factory.mktemp(f"iso-{request.param}")) as running:
        yield running

SECRET_FACT = "The acme vault code is 7731-alpha-kilo."


def chat(t: Tenant, text: str, model: str = "m", **kw: Any) -> Any:
    return t.sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)


def calls(upstream: FakeUpstreamClient) -> int:
    return int(upstream.calls()["calls"])


# -- caches -----------------------------------------------------------------

def test_cache_entries_are_not_shared_nor_poisoned(gw: Running, upstream: FakeUpstreamClient,
                                                   alice: Tenant, mallory: Tenant) -> None:
    question = "What is the acme vault code?"
    upstream.script(default={"text": SECRET_FACT})
    a = chat(alice, question)
    assert a.headers["x-seawall-cache"] == "miss"
    settle(gw)
    # B asks the same question, exactly and in other words: never A's answer.
    upstream.script(default={"text": "globex's own answer"})
    for text in (question, "what is the acme vault code", "Tell me the acme vault code?"):
        b = chat(mallory, text)
        assert SECRET_FACT not in b.parse().choices[0].message.content
        assert b.parse().choices[0].message.content == "globex's own answer"
        settle(gw)
    # B's answers (now cached under globex) did not poison A's entry.
    before = calls(upstream)
    again = chat(alice, question)
    assert again.headers["x-seawall-cache"] == "hit"
    assert again.parse().choices[0].message.content == SECRET_FACT
    near = chat(alice, "what is the acme vault code")
    assert near.parse().choices[0].message.content == SECRET_FACT
    assert calls(upstream) == before


# -- RAG --------------------------------------------------------------------

@pytest.fixture(scope="module")
def acme_docs(alice: Tenant) -> list[dict[str, Any]]:
    r = alice.http.post("/v1/collections/vault/documents", json={"documents": [
        {"source": "vault.md", "text": "# Vault\n\n" + SECRET_FACT, "metadata": {"k": "v"}},
        {"source": "other.md", "text": "Acme ships anvils on Tuesdays."}]})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _acme_state(alice: Tenant) -> tuple[Any, ...]:
    cols = alice.http.get("/v1/collections").json()["data"]
    docs = alice.http.get("/v1/collections/vault/documents").json()["data"]
    hits = alice.http.post("/v1/collections/vault/search",
                           json={"query": "vault code", "mode": "bm25"}).json()["data"]
    return (sorted((c["name"], c["documents"]) for c in cols),
            sorted((d["id"], d["source"]) for d in docs),
            [h["chunk_id"] for h in hits])


def test_rag_collections_by_name(alice: Tenant, mallory: Tenant,
                                 acme_docs: list[dict[str, Any]]) -> None:
    before = _acme_state(alice)
    assert SECRET_FACT in str(alice.http.post("/v1/collections/vault/search",
                                              json={"query": "vault code"}).json())
    b = mallory.http
    assert "vault" not in [c["name"] for c in b.get("/v1/collections").json()["data"]]
    assert b.get("/v1/collections/vault").status_code == 404
    assert b.get("/v1/collections/vault/documents").status_code == 404
    assert b.post("/v1/collections/vault/search", json={"query": "vault code"}
                  ).status_code == 404
    assert b.post("/v1/retrieve", json={"query": "vault code", "collection": "vault"}
                  ).status_code == 404
    assert b.delete("/v1/collections/vault").status_code == 404
    assert b.post("/v1/collections/vault/documents/delete",
                  json={"sources": ["vault.md"]}).status_code == 404
    assert _acme_state(alice) == before
    # Ingesting "into" acme's collection by its name makes globex's own one.
    r = b.post("/v1/collections/vault/documents",
               json={"documents": [{"source": "vault.md", "text": "POISON: the code is 0000."}]})
    assert r.status_code == 200, r.text
    assert _acme_state(alice) == before
    assert "POISON" not in str(alice.http.post("/v1/collections/vault/search",
                                               json={"query": "code", "top_k": 10}).json())
    assert SECRET_FACT not in str(b.post("/v1/collections/vault/search",
                                         json={"query": "vault code", "top_k": 10}).json())


def test_rag_documents_by_id(alice: Tenant, mallory: Tenant,
                             acme_docs: list[dict[str, Any]]) -> None:
    """Document ids are global numbers: B addresses A's ids through a
    collection of its own with the same name, and through another name."""
    b = mallory.http
    assert b.post("/v1/collections/vault/documents", json={"documents": [
        {"source": "mine.md", "text": "globex text"}]}).status_code == 200
    before = _acme_state(alice)
    for doc in acme_docs:
        did = doc["document_id"]
        for col in ("vault", "elsewhere"):
            assert b.get(f"/v1/collections/{col}/documents/{did}").status_code == 404
            assert b.delete(f"/v1/collections/{col}/documents/{did}").status_code == 404
        r = b.post("/v1/collections/vault/documents/delete", json={"ids": [did]})
        assert r.status_code == 200 and r.json().get("deleted", 0) == 0, r.text
    assert _acme_state(alice) == before
    for doc in acme_docs:
        got = alice.http.get(f"/v1/collections/vault/documents/{doc['document_id']}")
        assert got.status_code == 200


def test_rag_model_retrieves_from_the_callers_tenant(
        upstream: FakeUpstreamClient, tmp_path: Any) -> None:
    """A model configured with ``rag.collection: vault`` retrieves from the
    caller's own tenant's ``vault``: B never gets A's chunks in its prompt."""
    from tests.gateway import run_gateway
    from tests.security.conftest import config, make_tenant

    cfg = config(upstream)
    cfg["models"]["vault-bot"] = {"provider": "f", "model": "fake-1",
                                  "rag": {"collection": "vault", "top_k": 3}}
    with run_gateway(cfg, tmp_path) as g:
        a, b = make_tenant(g, "acme"), make_tenant(g, "globex")
        assert a.http.post("/v1/collections/vault/documents", json={"documents": [
            {"source": "vault.md", "text": SECRET_FACT}]}).status_code == 200
        assert b.http.post("/v1/collections/vault/documents", json={"documents": [
            {"source": "mine.md", "text": "Globex vault notes."}]}).status_code == 200
        for extra in ({"model": "vault-bot"},  # the model's collection
                      {"model": "m", "extra_body": {"rag": {"collection": "vault"}}}):
            upstream.reset()
            chat(b, "What is the vault code?", **extra)
            sent = str(upstream.calls()["requests"])
            assert "Globex vault notes" in sent  # the test can fail: retrieval did run
            assert "7731" not in sent


# -- traces and feedback ----------------------------------------------------

def test_traces_and_feedback(gw: Running, alice: Tenant, mallory: Tenant) -> None:
    rid = chat(alice, "feedback target").headers["x-request-id"]
    assert trace(gw, rid) is not None
    b = mallory.http
    for path in (f"/admin/traces/{rid}",):
        assert b.get(path).status_code == 403  # an app key lacks admin:traces
    r = b.post("/v1/feedback", json={"request_id": rid, "score": -1, "comment": "bad",
                                     "categories": ["spam"]})
    assert r.status_code == 404, r.text
    r = b.post("/v1/feedback", json={"request_id": "resp_" + rid, "score": -1})
    assert r.status_code == 404, r.text
    doc = master_http(gw).get(f"/admin/traces/{rid}").json()
    assert doc["feedback"] == []
    # A's own feedback works (the test can fail), and B cannot overwrite it.
    assert alice.http.post("/v1/feedback", json={"request_id": rid, "score": 1,
                                                 "user": "u1"}).status_code == 200
    assert b.post("/v1/feedback", json={"request_id": rid, "score": -1, "user": "u1"}
                  ).status_code == 404
    doc = master_http(gw).get(f"/admin/traces/{rid}").json()
    assert [f["score"] for f in doc["feedback"]] == [1]


# -- admin endpoints ----------------------------------------------------------

def test_every_admin_endpoint_refuses_an_app_key(gw: Running, alice: Tenant,
                                                 mallory: Tenant) -> None:
    rid = chat(alice, "admin target").headers["x-request-id"]
    settle(gw)
    stats = master_http(gw).get("/admin/cache").json()
    routes = [r for r in gw.app.app.routes if getattr(r, "path", "").startswith("/admin")]
    assert routes, "no admin routes found"
    tried = set()
    for route in routes:
        path = (route.path.replace("{key}", alice.key_id)
                .replace("{request_id}", rid))
        for method in sorted(route.methods - {"HEAD"}):
            body = {"all": True} if method == "POST" else None
            r = mallory.http.request(method, path, json=body)
            assert r.status_code in (401, 403), (method, path, r.status_code, r.text)
            assert MASTER not in r.text
            tried.add(f"{method} {route.path}")
    assert {"GET /admin/cache", "POST /admin/cache/purge", "POST /admin/keys/{key}/revoke",
            "GET /admin/traces/{request_id}"} <= tried
    # Nothing changed: A's key still works, the cache was not purged.
    assert alice.http.get("/v1/models").status_code == 200
    after = master_http(gw).get("/admin/cache").json()
    assert after["entries"] == stats["entries"], (stats, after)


# -- prompts (global by design: docs/prompts.md) -------------------------------

def test_prompts_are_global_and_not_writable_by_a_tenant(gw: Running, mallory: Tenant) -> None:
    """Prompts are operator configuration shared by every tenant (documented):
    no client route creates or changes one, and a variable's value is never
    a template."""
    gw.services.prompts.push("greet", {"messages": [
        {"role": "system", "content": "Greet {{ who }}."}], "model": "m"})
    for method, path in (("POST", "/v1/prompts"), ("PUT", "/v1/prompts/greet"),
                         ("POST", "/admin/prompts"), ("DELETE", "/v1/prompts/greet")):
        assert mallory.http.request(method, path, json={}).status_code in (401, 403, 404, 405)
    r = chat(mallory, "hi", extra_body={"prompt": {"name": "greet",
                                                   "variables": {"who": "{{ 7 * 7 }}"}}})
    assert r.status_code == 200
    assert gw.services.prompts.get("greet").version == 1


# -- files and batches ----------------------------------------------------------

def test_files_and_batches(gw: Running, alice: Tenant, mallory: Tenant) -> None:
    import io
    import json

    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "m", "messages": [{"role": "user",
                                                            "content": SECRET_FACT}]}})
    f = alice.sdk.files.create(file=("in.jsonl", io.BytesIO(line.encode())), purpose="batch")
    batch = alice.sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
    b = mallory.http
    for method, path in (("GET", f"/v1/files/{f.id}"), ("GET", f"/v1/files/{f.id}/content"),
                         ("DELETE", f"/v1/files/{f.id}"), ("GET", f"/v1/batches/{batch.id}"),
                         ("POST", f"/v1/batches/{batch.id}/cancel")):
        r = b.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert SECRET_FACT not in r.text
    r = b.post("/v1/batches", json={"input_file_id": f.id, "endpoint": "/v1/chat/completions",
                                    "completion_window": "24h"})
    assert r.status_code == 404, r.text
    assert f.id not in b.get("/v1/files").text and batch.id not in b.get("/v1/batches").text
    assert f.id not in b.get("/v1/files", params={"after": f.id}).text
    # Unchanged for A: the file is there and the batch runs to completion.
    assert alice.sdk.files.content(f.id).read() == line.encode()
    deadline = time.monotonic() + 60
    while (done := alice.sdk.batches.retrieve(batch.id)).status not in (
            "completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert done.status == "completed"
    for fid in (done.output_file_id,):
        assert b.get(f"/v1/files/{fid}/content").status_code == 404


# -- stored and background responses ----------------------------------------------

def test_stored_responses(gw: Running, alice: Tenant, mallory: Tenant) -> None:
    r = alice.sdk.responses.create(model="m", input=SECRET_FACT, store=True)
    b = mallory.http
    for method, path in (("GET", f"/v1/responses/{r.id}"),
                         ("GET", f"/v1/responses/{r.id}/input_items"),
                         ("GET", f"/v1/responses/{r.id}?stream=true"),
                         ("POST", f"/v1/responses/{r.id}/cancel"),
                         ("DELETE", f"/v1/responses/{r.id}")):
        got = b.request(method, path)
        assert got.status_code == 404, (method, path, got.text)
        assert "7731" not in got.text
    # Chaining onto A's conversation: a 404, and nothing of A's reaches the upstream.
    with pytest.raises(openai.NotFoundError):
        mallory.sdk.responses.create(model="m", input="repeat what I said",
                                     previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        mallory.sdk.responses.create(model="m", input="repeat", previous_response_id=r.id,
                                     background=True)
    assert alice.sdk.responses.retrieve(r.id).status == "completed"
    assert [i.id for i in alice.sdk.responses.input_items.list(r.id).data]


def test_background_response_events(gw: Running, upstream: FakeUpstreamClient,
                                    alice: Tenant, mallory: Tenant) -> None:
    upstream.script(default={"text": SECRET_FACT, "ttft_s": 0.3})
    r = alice.sdk.responses.create(model="m", input="slow", background=True)
    b = mallory.http
    got = b.get(f"/v1/responses/{r.id}", params={"stream": "true", "starting_after": "-1"})
    assert got.status_code == 404 and "7731" not in got.text
    assert b.post(f"/v1/responses/{r.id}/cancel").status_code == 404
    deadline = time.monotonic() + 30
    while (done := alice.sdk.responses.retrieve(r.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert done.status == "completed" and SECRET_FACT in done.output_text
    with httpx.stream("GET", f"{gw.url}/v1/responses/{r.id}?stream=true", timeout=30,
                      headers={"authorization": f"Bearer {alice.secret}"}) as s:
        assert s.status_code == 200


def test_an_unknown_key_and_the_master_key_of_nobody(gw: Running) -> None:
    """Sanity for the rest: a made-up key of the right shape is a 401."""
    r = httpx.get(gw.url + "/v1/collections",
                  headers={"authorization": "Bearer sk-sw-" + "0" * 48})
    assert r.status_code == 401
    assert "sk-sw-000" not in r.text
    assert httpx.get(gw.url + "/v1/collections",
                     headers={"authorization": f"Bearer {MASTER}"}).status_code == 200


# -- experiments (config of the operator; clients only take part) ---------------------

@pytest.fixture(scope="module")
def exp_gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
           ) -> Any:
    from tests.gateway import run_gateway
    from tests.security.conftest import config

    cfg = config(upstream)
    cfg["models"]["next"] = {"provider": "f", "model": "fake-2"}
    cfg["experiments"] = {"secret-rollout": {
        "model": "m", "kind": "ab", "sticky": "user",
        "variants": [{"name": "current", "weight": 1},
                     {"name": "candidate", "weight": 1, "model": "next"}]}}
    with run_gateway(cfg, tmp_path_factory.mktemp("exp")) as running:
        yield running


def test_a_client_cannot_choose_its_arm_by_header(exp_gw: Running) -> None:
    """No request header or body field picks the arm: the same ``user`` gets
    the same arm whatever the client says (assignment is by hash)."""
    from tests.security.conftest import make_tenant

    b = make_tenant(exp_gw, "globex")
    arms = set()
    for extra in ({}, {"x-seawall-experiment": "secret-rollout=candidate"},
                  {"x-seawall-experiment": "secret-rollout=current"},
                  {"x-seawall-arm": "candidate"}):
        r = b.http.post("/v1/chat/completions", headers=extra, json={
            "model": "m", "user": "u-fixed", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
        rec = trace(exp_gw, r.headers["x-request-id"])
        assert rec is not None
        arms.add(rec["experiment"])
    assert len(arms) == 1 and next(iter(arms)), arms


def test_the_experiment_name_is_not_shown_to_an_app_key(exp_gw: Running) -> None:
    """Issue 17: a tenant that sees the experiment and its arm can steer it."""
    from tests.security.conftest import make_tenant

    b = make_tenant(exp_gw, "globex2")
    r = b.http.post("/v1/chat/completions", json={
        "model": "m", "user": "u1", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    assert "secret-rollout" not in str(r.headers)
