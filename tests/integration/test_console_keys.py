"""Signing in to the console with a virtual key (no browser: httpx as the
browser, a real gateway on loopback): a tenant admin's session acts as its
key on every page and every bridged API call, sees only its tenant, and
ends the moment the key is revoked or rotated out; a key without an admin
scope is refused at sign-in; the cookie never holds the secret."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-console-keys"
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "m1"}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-keys")) as running:
        yield running


def _admin(gw: Running) -> httpx.Client:
    return httpx.Client(base_url=gw.url, timeout=30,
                        headers={"authorization": f"Bearer {MASTER}"})


def _key(gw: Running, **fields: object) -> dict[str, object]:
    r = _admin(gw).post("/admin/keys", json=fields)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _sign_in(gw: Running, secret: str) -> tuple[httpx.Client, httpx.Response]:
    browser = httpx.Client(base_url=gw.url, timeout=30)
    browser.get("/ui/signin")
    r = browser.post("/ui/signin", data={"csrf": browser.cookies["sw_signin"], "key": secret,
                                         "next": "/ui/traces"})
    return browser, r


def _csrf(browser: httpx.Client) -> str:
    page = browser.get("/ui/traces")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


def _chat(gw: Running, secret: str, text: str) -> str:
    r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
        "model": "gpt-x", "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def test_a_tenant_admin_acts_as_its_key_on_pages_and_api_calls(gw: Running) -> None:
    app_a = _key(gw, name="app-a", tenant="acme")
    admin_b = _key(gw, name="admin-b", tenant="globex", role="tenant_admin")
    rid_a = _chat(gw, str(app_a["secret"]), "acme secret plans")
    rid_b = _chat(gw, str(admin_b["secret"]), "globex question")
    gw.on_server(gw.services.writer.flush())

    browser, r = _sign_in(gw, str(admin_b["secret"]))
    assert r.status_code == 303 and r.headers["location"] == "/ui/traces"
    cookie = browser.cookies["sw_session"]
    assert str(admin_b["secret"]) not in cookie
    payload = orjson.loads(base64.urlsafe_b64decode(cookie.split(".")[0] + "=="))
    assert payload["sub"] == admin_b["id"] and payload["tenant"] == "globex"
    assert not any(str(v).endswith(str(admin_b["secret"])[-8:]) for v in payload.values())

    # Pages: only globex's traces; acme's trace by URL is not found.
    page = browser.get("/ui/traces")
    assert rid_b in page.text and rid_a not in page.text
    page = browser.get("/ui/traces?tenant=acme")  # the URL cannot widen the view
    assert rid_a not in page.text
    assert browser.get(f"/ui/traces/{rid_a}").status_code == 404
    assert browser.get(f"/ui/traces/{rid_b}").status_code == 200
    assert browser.get("/ui/quality").status_code == 403  # every tenant's figures
    keys_page = browser.get("/ui/keys").text
    assert admin_b["id"] in keys_page and app_a["id"] not in keys_page

    # Bridged API calls act as the key: the same confinement, recorded as the key.
    token = _csrf(browser)
    hdr = {"x-csrf-token": token}
    listed = browser.get("/admin/traces?limit=200", headers=hdr).json()["data"]
    assert {t["tenant"] for t in listed} == {"globex"}
    assert browser.get(f"/admin/traces/{rid_a}", headers=hdr).status_code == 404
    assert browser.get("/admin/keys/app-a", headers=hdr).status_code == 404
    assert browser.get("/admin/cache", headers=hdr).status_code == 403  # operator only
    r = browser.post("/v1/chat/completions", json=CHAT, headers=hdr)
    assert r.status_code == 200, r.text
    record = gw.on_server(gw.services.store.get_trace(r.headers["x-request-id"]))
    if record is None:
        gw.on_server(gw.services.writer.flush())
        record = gw.on_server(gw.services.store.get_trace(r.headers["x-request-id"]))
    assert record is not None
    assert record["tenant"] == "globex" and record["key_id"] == admin_b["id"]
    # A key made from the console's session lands in its tenant; another tenant is refused.
    r = browser.post("/admin/keys", json={"name": "made-by-b"}, headers=hdr)
    assert r.status_code == 201 and r.json()["tenant"] == "globex"
    made = r.json()["id"]
    r = browser.post("/admin/keys", json={"name": "x", "tenant": "acme"}, headers=hdr)
    assert r.status_code == 403
    # The audit log names the key as the one who acted.
    audit = _admin(gw).get("/admin/audit?tenant=globex&action=key.create").json()["data"]
    row = next(e for e in audit if e["target"] == made)
    assert row["actor"]["id"] == admin_b["id"] and row["actor"]["role"] == "tenant_admin"

    # Revoked: the next page and the next API call are refused.
    assert _admin(gw).post(f"/admin/keys/{admin_b['id']}/revoke").status_code == 200
    r = browser.get("/ui/traces")
    assert r.status_code == 303 and "ended=1" in r.headers["location"]
    assert browser.post("/v1/chat/completions", json=CHAT, headers=hdr).status_code == 401
    assert "session has ended" in browser.get(r.headers["location"]).text


def test_a_key_without_an_admin_scope_is_refused_at_sign_in(gw: Running) -> None:
    app = _key(gw, name="plain-app", tenant="acme")
    browser, r = _sign_in(gw, str(app["secret"]))
    assert r.status_code == 401
    assert "holds no admin scope" in r.text and "plain-app" in r.text
    assert "sw_session" not in browser.cookies
    # A scoped-down tenant admin (admin:traces only) signs in, but the
    # keys page and the playground need scopes it lacks.
    viewer = _key(gw, name="viewer", tenant="acme", role="tenant_admin",
                  scopes=["admin:traces"])
    browser, r = _sign_in(gw, str(viewer["secret"]))
    assert r.status_code == 303
    assert browser.get("/ui/traces").status_code == 200
    assert browser.get("/ui/keys").status_code == 403
    assert browser.get("/ui/playground").status_code == 403
    # A revoked key, a wrong key: refused with the API's reason.
    _admin(gw).post(f"/admin/keys/{viewer['id']}/revoke")
    _, r = _sign_in(gw, str(viewer["secret"]))
    assert r.status_code == 401 and "revoked" in r.text


def test_rotating_the_key_out_ends_the_session(gw: Running) -> None:
    admin = _key(gw, name="rotating-admin", tenant="initech", role="tenant_admin")
    browser, r = _sign_in(gw, str(admin["secret"]))
    assert r.status_code == 303
    assert browser.get("/ui/traces").status_code == 200
    # Within the grace the old secret (and its session) still works...
    r = _admin(gw).post(f"/admin/keys/{admin['id']}/rotate", json={"grace": "1h"})
    assert r.status_code == 200, r.text
    assert browser.get("/ui/traces").status_code == 200
    # ...rotated again with no grace, the secret that signed in is gone.
    r = _admin(gw).post(f"/admin/keys/{admin['id']}/rotate", json={"grace": "0s"})
    assert r.status_code == 200, r.text
    assert browser.get("/ui/traces").status_code == 303


def test_a_forged_bridge_credential_is_refused(gw: Running) -> None:
    admin = _key(gw, name="forge-target", tenant="acme", role="tenant_admin")
    for token in (f"swc-{admin['id']}.x.y", f"swc-{admin['id']}", "swc-" + "a" * 600):
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30,
                       headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
