"""The web console in a real headless Chromium (Debian's, driven by
Playwright; no browser download): sign in, the playground streams from the
fake upstream in several paints, thumbs-down lands on the trace page, a
revoked key disappears and stops working, and the security guards (CSRF,
CSP) hold. Skipped only when /usr/bin/chromium is absent."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.pipeline.stages import hash_key
from seawall.store.base import ApiKey
from tests.e2e.chromium import needs_chromium, signed_in
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = needs_chromium
MASTER = "sk-master-console-tests"
WORDS = "The tower is three hundred and thirty metres tall and was finished in eighteen eighty nine"


def _config(upstream: FakeUpstreamClient, **auth: Any) -> dict[str, Any]:
    return {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False, **auth},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"}},
    }


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    with run_gateway(_config(upstream), tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture
def page(browser: Any, gw: Running) -> Iterator[Any]:
    """A signed-in page (the sign-in form, as a person uses it, reached by
    asking for the traces page: the form sends the user back there)."""
    with signed_in(browser, gw.url, MASTER, start="/ui/traces", lands="/ui/traces") as pg:
        yield pg


def test_sign_in_with_a_wrong_key_is_refused_then_the_master_key_works(browser: Any,
                                                                       gw: Running) -> None:
    browser.clear_cookies()
    pg = browser.new_page()
    response = pg.goto(gw.url + "/ui/overview")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    pg.fill("#key", "sk-not-the-master-key")
    pg.click("button[type=submit]")
    assert "not the master key" in pg.text_content("[role=alert]")
    pg.fill("#key", MASTER)
    pg.click("button[type=submit]")
    pg.wait_for_url(re.compile(r"/ui/overview$"))
    assert pg.text_content("h1") == "Overview"
    cookie = next(c for c in browser.cookies() if c["name"] == "sw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert MASTER not in cookie["value"]  # the key never reaches the browser
    pg.close()


def test_playground_streams_in_paints_and_thumbs_down_reaches_the_trace(
        page: Any, gw: Running, upstream: FakeUpstreamClient) -> None:
    upstream.script(default={"text": WORDS, "tokens_per_s": 25, "ttft_s": 0.3})
    try:
        page.goto(gw.url + "/ui/playground")
        # Record the answer's length at every paint-affecting change.
        # Record what the page shows at each change: the skeleton, then the answer's length.
        page.evaluate("""() => {
            window.__seen = [];
            const answer = document.getElementById('p-answer');
            const skeleton = document.getElementById('p-skeleton');
            new MutationObserver(() => window.__seen.push(answer.textContent.length))
              .observe(answer, {childList: true, characterData: true, subtree: true});
            new MutationObserver(() => window.__seen.push(skeleton.hidden ? 'off' : 'skeleton'))
              .observe(skeleton, {attributes: true, attributeFilter: ['hidden']});
        }""")
        page.fill("#p-message", "how tall is the tower?")
        page.click("#p-send")
        page.wait_for_selector("#p-rate", state="visible")
        seen = page.evaluate("window.__seen")
        assert page.text_content("#p-answer") == WORDS
        # The skeleton came first, before any text; then the text grew paint by paint.
        assert seen.index("skeleton") < min(i for i, v in enumerate(seen) if v not in
                                            ("skeleton", "off", 0)), seen
        growing = [n for n in seen if isinstance(n, int) and n > 0]
        assert len(set(growing)) >= 4, seen  # several paints, not one
        assert growing[0] < len(WORDS) and growing[-1] == len(WORDS)
        request_id = page.text_content("#p-trace")
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        assert page.text_content("#p-deployment") != "–"
        page.click("#p-down")
        page.wait_for_selector("#p-rated:has-text('Thanks')")
        page.click("#p-trace")
        page.wait_for_url(re.compile(rf"/ui/traces/{request_id}$"))
        assert "how tall is the tower?" in page.text_content("#trace-input")
        assert page.text_content("#trace-output") == WORDS
        assert "-1.0" in page.text_content("#trace-feedback")
    finally:
        upstream.script(default={})


def test_traces_list_filters_and_links_to_the_trace(page: Any, gw: Running) -> None:
    client = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"},
                          timeout=30)
    marker = uuid.uuid4().hex[:10]
    r = client.post("/v1/chat/completions", json={
        "model": "gpt-x", "messages": [{"role": "user", "content": f"find {marker} please"}]})
    rid = r.headers["x-request-id"]
    gw.on_server(gw.services.writer.flush())
    page.goto(gw.url + "/ui/traces")
    page.fill("#f-q", marker)
    page.click(".filters button[type=submit]")
    page.wait_for_url(re.compile(rf"q={marker}"))
    links = page.locator("table.traces tbody a")
    assert links.count() == 1
    links.first.click()
    page.wait_for_url(re.compile(rf"/ui/traces/{rid}$"))
    assert f"find {marker} please" in page.text_content("#trace-input")


def test_a_revoked_key_disappears_and_stops_working(page: Any, gw: Running) -> None:
    secret = "sk-sw-" + uuid.uuid4().hex
    key_id = "key_" + uuid.uuid4().hex[:8]
    gw.on_server(gw.services.store.create_key(ApiKey(
        id=key_id, name="to-revoke", tenant="acme", key_hash=hash_key(secret),
        prefix=secret[:10], rpm=None, created_at=time.time())))
    api = httpx.Client(base_url=gw.url, timeout=30)
    auth = {"authorization": f"Bearer {secret}"}
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    assert api.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    page.goto(gw.url + "/ui/keys")
    row = page.locator(f"tr[data-key='{key_id}']")
    assert secret[:10] in row.text_content() and secret not in page.content()
    page.once("dialog", lambda d: d.accept())
    row.locator("button", has_text="Revoke").click()
    row.wait_for(state="detached")
    page.reload()
    assert page.locator(f"tr[data-key='{key_id}']").count() == 0
    deadline = time.monotonic() + 15  # the auth cache drops it on the change notice
    while (status := api.post("/v1/chat/completions", json=body,
                              headers=auth).status_code) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 401


def test_posts_without_the_csrf_token_are_refused(page: Any, gw: Running) -> None:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    client = httpx.Client(base_url=gw.url, cookies=cookies, timeout=30)
    # The console's own form action...
    r = client.post("/ui/signout", data={})
    assert r.status_code == 403
    r = client.post("/ui/signout", data={"csrf": "forged"})
    assert r.status_code == 403
    # ...and the API through the session: without the token the cookie is worth nothing.
    r = client.post("/admin/keys/nobody/revoke", json={})
    assert r.status_code == 401
    r = client.post("/v1/chat/completions", json={
        "model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401
    token = page.get_attribute("meta[name=csrf-token]", "content")
    r = client.post("/admin/keys/nobody/revoke", json={}, headers={"x-csrf-token": token})
    assert r.status_code == 404  # authorised now; the key just does not exist
    # A sign-in form post without its token.
    r = httpx.post(gw.url + "/ui/signin", data={"key": MASTER}, timeout=30)
    assert r.status_code == 403


def test_anonymous_loopback_goes_straight_in(browser: Any, upstream: FakeUpstreamClient,
                                             tmp_path: Path) -> None:
    config = _config(upstream)
    config["auth"] = {"allow_anonymous_loopback": True}
    with run_gateway(config, tmp_path) as anon:
        browser.clear_cookies()
        pg = browser.new_page()
        pg.goto(anon.url + "/ui")
        pg.wait_for_url(re.compile(r"/ui/overview$"))
        assert "anonymous loopback" in pg.text_content(".who")
        pg.goto(anon.url + "/ui/playground")
        pg.fill("#p-message", "hello from the console")
        pg.click("#p-send")
        pg.wait_for_selector("#p-rate", state="visible")
        assert pg.text_content("#p-answer") == "hello from the console"
        pg.close()


def test_a_prompt_rollback_from_the_ui_changes_the_version_requests_get(
        page: Any, gw: Running) -> None:
    name = "greet-" + uuid.uuid4().hex[:6]
    prompts = gw.services.prompts
    for text in ("version one", "version two"):  # v2 takes the production label
        prompts.push(name, {"messages": [{"role": "system", "content": text}]},
                     labels=["production"])
    api = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"},
                       timeout=30)

    def served() -> str:
        r = api.post("/v1/chat/completions", json={
            "model": "gpt-x", "prompt": {"name": name},
            "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        return r.headers["x-seawall-prompt-version"]

    assert served() == f"{name}@2"
    page.goto(gw.url + "/ui/prompts")
    label = page.locator(f"tr[data-prompt='{name}'] li[data-label='production']")
    assert "v2" in label.text_content()
    page.once("dialog", lambda d: d.accept())
    label.locator("button").click()
    page.wait_for_selector(f"tr[data-prompt='{name}'] li[data-label='production']:has-text('v1')")
    assert served() == f"{name}@1"
