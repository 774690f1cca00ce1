"""The console signed in with a virtual key, and the Keys page, in a real
headless Chromium (Debian's, driven by Playwright): a tenant admin of one
tenant sees only its traces, gets the not-found page for another tenant's
trace by URL, streams in the playground and rates as its key, and is out
the moment its key is revoked; a key made on the Keys page shows its secret
once and works with the official openai SDK. Skipped only when
/usr/bin/chromium is absent."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.chromium import needs_chromium, sign_in
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = needs_chromium
MASTER = "sk-master-console-key-tests"
# Expensive on purpose, so that a few tokens show as spend against a budget.
PRICE = {"input_per_mtok": 1_000.0, "output_per_mtok": 1_000.0}


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt", "price": PRICE},
                   "gpt-other": {"provider": "oa", "model": "upstream-other"}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-keys")) as running:
        yield running


def _admin(gw: Running) -> httpx.Client:
    return httpx.Client(base_url=gw.url, timeout=30,
                        headers={"authorization": f"Bearer {MASTER}"})


def _make_key(gw: Running, **fields: Any) -> dict[str, Any]:
    r = _admin(gw).post("/admin/keys", json=fields)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _sign_in(browser: Any, gw: Running, secret: str, path: str) -> Any:
    return sign_in(browser, gw.url, secret, start=path, lands=path)


def test_a_tenant_admin_sees_only_its_tenant_and_is_out_once_revoked(
        browser: Any, gw: Running) -> None:
    app_a = _make_key(gw, name="acme-app", tenant="acme")
    admin_b = _make_key(gw, name="globex-admin", tenant="globex", role="tenant_admin")
    sdk_a = openai.OpenAI(base_url=gw.url + "/v1", api_key=app_a["secret"], max_retries=0)
    sdk_b = openai.OpenAI(base_url=gw.url + "/v1", api_key=admin_b["secret"], max_retries=0)
    raw_a = sdk_a.chat.completions.with_raw_response.create(
        model="gpt-x", messages=[{"role": "user", "content": "acme's private question"}])
    rid_a = raw_a.headers["x-request-id"]
    raw_b = sdk_b.chat.completions.with_raw_response.create(
        model="gpt-x", messages=[{"role": "user", "content": "globex's question"}])
    rid_b = raw_b.headers["x-request-id"]
    gw.on_server(gw.services.writer.flush())

    pg = _sign_in(browser, gw, admin_b["secret"], "/ui/traces")
    assert "globex-admin" in pg.text_content(".who")
    assert "tenant globex" in pg.text_content(".who")
    cookie = next(c for c in browser.cookies() if c["name"] == "sw_session")
    assert admin_b["secret"] not in cookie["value"]
    links = [a.get_attribute("href") for a in pg.locator("table.traces tbody a").all()]
    assert f"/ui/traces/{rid_b}" in links and f"/ui/traces/{rid_a}" not in links
    cells = pg.locator("table.traces tbody td:nth-child(4)").all_inner_texts()
    tenants = {t.strip() for t in cells}
    assert tenants == {"globex"}
    # The URL cannot widen the view: tenant=acme is overridden by the session's tenant.
    pg.goto(gw.url + "/ui/traces?tenant=acme")
    links = [a.get_attribute("href") for a in pg.locator("table.traces tbody a").all()]
    assert f"/ui/traces/{rid_a}" not in links
    # Tenant A's trace by URL: the not-found page, nothing of A's.
    response = pg.goto(gw.url + f"/ui/traces/{rid_a}")
    assert response.status == 404
    assert "No trace record" in pg.text_content("[role=alert]")
    assert "acme's private question" not in pg.content()

    # The playground streams as the key, and its rating is the key's.
    pg.goto(gw.url + "/ui/playground")
    pg.fill("#p-message", "hello from globex")
    pg.click("#p-send")
    pg.wait_for_selector("#p-rate", state="visible")
    request_id = pg.text_content("#p-trace")
    pg.click("#p-down")
    pg.wait_for_selector("#p-rated:has-text('Thanks')")
    gw.on_server(gw.services.writer.flush())
    record = gw.on_server(gw.services.store.get_trace(request_id))
    assert record is not None
    assert record["tenant"] == "globex" and record["key_id"] == admin_b["id"]
    pg.goto(gw.url + f"/ui/traces/{request_id}")
    assert "-1.0" in pg.text_content("#trace-feedback")

    # Revoked: the session is over at the next page, and so are its API calls.
    assert _admin(gw).post(f"/admin/keys/{admin_b['id']}/revoke").status_code == 200
    pg.goto(gw.url + "/ui/traces")
    assert "/ui/signin" in pg.url
    assert "session has ended" in pg.text_content("[role=alert]")
    assert not any(c["name"] == "sw_session" and c["value"] for c in browser.cookies())
    pg.close()


def test_create_a_key_on_the_keys_page_the_secret_shows_once_and_works(
        browser: Any, gw: Running) -> None:
    pg = _sign_in(browser, gw, MASTER, "/ui/keys")
    pg.fill("#k-name", "made-in-console")
    pg.fill("#k-tenant", "initech")
    pg.check("input[name=scopes][value=chat]")
    pg.fill("#k-models", "gpt-x")
    pg.fill("#k-rpm", "600")
    pg.fill("#k-tpm", "100000")
    pg.fill("#k-budget", "5")
    pg.select_option("#k-period", "day")
    pg.fill("#k-expires", "30d")
    pg.click("#k-submit")
    pg.wait_for_selector("#k-created", state="visible")
    secret = pg.input_value("#k-secret")
    key_id = pg.text_content("#k-created-id")
    assert secret.startswith("sk-sw-") and key_id.startswith("key_")

    # The key as the API holds it: every field from the form.
    shown = _admin(gw).get(f"/admin/keys/{key_id}").json()
    assert shown["tenant"] == "initech" and shown["scopes"] == ["chat"]
    assert shown["models"] == ["gpt-x"] and shown["rpm"] == 600 and shown["tpm"] == 100000
    assert shown["budget_usd"] == 5 and shown["budget_period"] == "day"
    assert 29 * 86400 < shown["expires_at"] - time.time() <= 30 * 86400

    # Once: after a reload the page has the key's prefix, never its secret.
    pg.reload()
    row = pg.locator(f"tr[data-key='{key_id}']")
    assert secret[:10] in row.text_content()
    assert secret not in pg.content()

    # The new key works with the official SDK, within what the form gave it.
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    answer = sdk.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "made on the keys page"}])
    assert answer.choices[0].message.content == "made on the keys page"
    with pytest.raises(openai.PermissionDeniedError):
        sdk.chat.completions.create(model="gpt-other",
                                    messages=[{"role": "user", "content": "no"}])
    with pytest.raises(openai.PermissionDeniedError):
        sdk.embeddings.create(model="gpt-x", input="no embeddings scope")

    # Its spend shows against its budget on the Keys page.
    deadline = time.monotonic() + 15
    while True:
        pg.reload()
        spend = pg.text_content(f"tr[data-key='{key_id}'] td.spend")
        if not spend.startswith("$0.0000") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert re.match(r"\$\d+\.\d{4} of \$5\.0000 / day", spend), spend
    assert not spend.startswith("$0.0000"), spend
    pg.close()


def test_a_tenant_admin_makes_keys_of_its_own_tenant_only(browser: Any, gw: Running) -> None:
    admin = _make_key(gw, name="umbrella-admin", tenant="umbrella", role="tenant_admin",
                      scopes=["admin:keys", "admin:traces", "chat"])
    pg = _sign_in(browser, gw, admin["secret"], "/ui/keys")
    assert pg.input_value("#k-tenant") == "umbrella"
    assert pg.get_attribute("#k-tenant", "readonly") is not None
    # Only the scopes it holds are offered.
    offered = {c.get_attribute("value") for c in pg.locator("input[name=scopes]").all()}
    assert offered == {"admin:keys", "admin:traces", "chat"}
    # Left to the role's defaults, the app key would get scopes the admin does
    # not hold (embeddings...): the API says so.
    pg.fill("#k-name", "umbrella-bot")
    pg.click("#k-submit")
    pg.wait_for_selector("#k-error", state="visible")
    assert "cannot grant scopes it does not hold" in pg.text_content("#k-error")
    pg.check("input[name=scopes][value=chat]")
    pg.click("#k-submit")
    pg.wait_for_selector("#k-created", state="visible")
    key_id = pg.text_content("#k-created-id")
    shown = _admin(gw).get(f"/admin/keys/{key_id}").json()
    assert shown["tenant"] == "umbrella"
    # Forcing another tenant in the page's form is refused by the API.
    pg.goto(gw.url + "/ui/keys")
    pg.evaluate("document.getElementById('k-tenant').removeAttribute('readonly')")
    pg.fill("#k-name", "sneaky")
    pg.fill("#k-tenant", "acme")
    pg.click("#k-submit")
    pg.wait_for_selector("#k-error", state="visible")
    assert "own tenant" in pg.text_content("#k-error")
    assert not any(k["name"] == "sneaky"
                   for k in _admin(gw).get("/admin/keys").json()["data"])
    pg.close()
