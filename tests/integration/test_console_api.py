"""``GET /admin/traces`` (the console's trace list as JSON) on a real
gateway: the admin check, keyset paging over real records, filters, and a
400 naming each bad parameter. And /ui's guards without a browser: a page
redirects to sign-in, every response carries the CSP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

MASTER = "sk-master-console-api"


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "m1"},
                   "gpt-y": {"provider": "oa", "model": "m2"}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-api")) as running:
        api = httpx.Client(base_url=running.url, timeout=30,
                           headers={"authorization": f"Bearer {MASTER}"})
        for i in range(7):
            r = api.post("/v1/chat/completions", json={
                "model": ("gpt-x", "gpt-y")[i % 2],
                "messages": [{"role": "user", "content": f"question number {i}"}]})
            assert r.status_code == 200
        running.on_server(running.services.writer.flush())
        yield running


def _get(gw: Running, query: str, key: str | None = MASTER) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{gw.url}/admin/traces{query}", headers=headers, timeout=30)


def test_needs_the_master_key(gw: Running) -> None:
    assert _get(gw, "", key=None).status_code == 401
    assert _get(gw, "", key="sk-wrong-key-123").status_code == 401


def test_pages_follow_the_cursor_newest_first(gw: Running) -> None:
    seen: list[str] = []
    # (The admin calls are traced too: look at the chat records only.)
    query = "?limit=3&model=gpt-x"
    while True:
        body = _get(gw, query).json()
        assert len(body["data"]) <= 3
        seen += [r["trace_id"] for r in body["data"]]
        if body["next_cursor"] is None:
            break
        query = f"?limit=3&model=gpt-x&cursor={body['next_cursor']}"
    everything = _get(gw, "?limit=200").json()["data"]
    chats = [r["trace_id"] for r in everything if r["model"] == "gpt-x"]
    assert seen == chats and len(seen) == 4
    times = [r["started_at"] for r in everything]
    assert times == sorted(times, reverse=True)


def test_filters(gw: Running) -> None:
    rows = _get(gw, "?model=gpt-y").json()["data"]
    assert {r["model"] for r in rows} == {"gpt-y"} and len(rows) == 3
    rows = _get(gw, "?q=number%205").json()["data"]
    assert len(rows) == 1 and rows[0]["model"] == "gpt-y"
    assert _get(gw, "?status=error&model=gpt-x").json()["data"] == []
    assert len(_get(gw, "?status=ok&model=gpt-x").json()["data"]) == 4
    # Feedback, judge scores and route: none given yet, so none match.
    for query in ("?feedback=any", "?score_below=10", "?route=auto"):
        assert _get(gw, query).json()["data"] == []
    one = _get(gw, "?q=number%203").json()["data"][0]["trace_id"]
    api = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
    assert api.post("/v1/feedback", json={"request_id": one, "score": -1}).status_code < 300
    assert [r["trace_id"] for r in _get(gw, "?feedback=down").json()["data"]] == [one]
    assert _get(gw, "?feedback=up").json()["data"] == []


@pytest.mark.parametrize(("query", "param"), [
    ("?status=broken", "status"), ("?limit=0", "limit"), ("?limit=1000", "limit"),
    ("?cursor=nonsense", "cursor"), ("?since=nan", "since"), ("?range=9y", "range"),
    ("?cache=sometimes", "cache"), ("?q=" + "x" * 201, "q"),
    ("?feedback=sideways", "feedback"), ("?score_below=inf", "score_below"),
    ("?score_above=high", "score_above"), ("?route=" + "r" * 201, "route"),
])
def test_bad_parameters_are_a_400_naming_them(gw: Running, query: str, param: str) -> None:
    r = _get(gw, query)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_pages_redirect_to_sign_in_with_the_csp(gw: Running) -> None:
    for path in ("/ui/overview", "/ui/traces", "/ui/playground", "/ui/keys", "/ui/traces/x"):
        r = httpx.get(gw.url + path, timeout=30)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")
        assert "script-src 'self'" in r.headers["content-security-policy"]
    # Only console paths are followed after sign-in: no open redirect.
    r = httpx.get(gw.url + "/ui/signin?next=//evil.example/x", timeout=30)
    assert 'name="next" value="/ui/overview"' in r.text


def test_the_quality_page_shows_slos_and_alerts_or_what_enables_them(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Anonymous loopback (the laptop setup) opens the console straight away."""
    base = {"auth": {"allow_anonymous_loopback": True}, "providers": {"fake": {"type": "fake"}},
            "models": {"echo": {"provider": "fake"}}}
    with run_gateway(base, tmp_path_factory.mktemp("q0")) as plain:
        page = httpx.get(plain.url + "/ui/quality", timeout=30)
        assert page.status_code == 200 and "quality.slos" in page.text
        assert 'id="slos"' not in page.text
    slo = {"name": "up", "kind": "availability", "objective": 0.99, "period_s": 3600,
           "model": "echo"}
    with run_gateway({**base, "quality": {"interval_s": 0.1, "drift": {"enabled": False},
                                          "slos": [slo]}},
                     tmp_path_factory.mktemp("q1")) as gw:
        for _ in range(3):
            r = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
                "model": "echo", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
        deadline = time.monotonic() + 30
        while True:
            gw.on_server(gw.services.writer.flush())
            page = httpx.get(gw.url + "/ui/quality", timeout=30)
            if "3 (0)" in page.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert page.status_code == 200 and 'id="slos"' in page.text
        assert ">up<" in page.text and "3 (0)" in page.text  # 3 events, none bad
        assert "100.0%" in page.text  # the whole error budget left


def test_a_prompt_page_shows_its_versions_and_a_diff(gw: Running) -> None:
    """Two versions pushed: the prompt's page lists both with their labels
    and the diff shows the changed line as removed and added (escaped);
    unknown names and versions are 404s, malformed versions 400s."""
    prompts = gw.services.prompts
    for text in ("Be <brief>.", "Be thorough."):  # v2 takes production
        prompts.push("diffed", {"messages": [{"role": "system", "content": text}]},
                     labels=["production"])
    prompts.label("diffed", 1, "staging")
    browser = httpx.Client(base_url=gw.url, timeout=30)
    browser.get("/ui/signin")
    r = browser.post("/ui/signin", data={"csrf": browser.cookies["sw_signin"], "key": MASTER,
                                         "next": "/ui/prompts"})
    assert r.status_code == 303
    listing = browser.get("/ui/prompts")
    assert listing.status_code == 200 and 'href="/ui/prompts/diffed"' in listing.text

    page = browser.get("/ui/prompts/diffed?a=1&b=2")
    assert page.status_code == 200, page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    rows = re.findall(r'<tr data-version="(\d+)">(.*?)</tr>', page.text, re.S)
    assert [v for v, _ in rows] == ["2", "1"]  # newest first
    assert 'data-label="production"' in rows[0][1] and 'data-label="staging"' in rows[1][1]
    removed = re.findall(r'<span class="d-del">(.*?)\n</span>', page.text)
    added = re.findall(r'<span class="d-add">(.*?)\n</span>', page.text)
    assert removed == ["-template: Be &lt;brief&gt;."], page.text
    assert added == ["+template: Be thorough."], page.text
    # Without a and b: the newest two, the same diff.
    assert re.findall(r'class="d-add">(.*?)\n', browser.get("/ui/prompts/diffed").text) == added
    same = browser.get("/ui/prompts/diffed?a=2&b=2")
    assert same.status_code == 200 and 'id="same"' in same.text

    for bad in ("?a=1&b=3", "?a=99999&b=1"):
        assert browser.get("/ui/prompts/diffed" + bad).status_code == 404
    for path in ("/ui/prompts/no-such-prompt", "/ui/prompts/" + "p" * 101,
                 "/ui/prompts/bad%20name"):
        assert browser.get(path).status_code == 404
    for bad in ("?a=x&b=1", "?a=0&b=1", "?a=1&b=" + "9" * 11, "?a=-1&b=2"):
        assert browser.get("/ui/prompts/diffed" + bad).status_code == 400
    # Signed out, the page is behind sign-in like the others.
    anon = httpx.get(gw.url + "/ui/prompts/diffed", timeout=30)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/ui/signin")


def test_the_overview_shows_deployment_key_and_user_tables(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The client's own ``user`` text is shown escaped and cut to 64 characters."""
    base = {"auth": {"allow_anonymous_loopback": True}, "providers": {"fake": {"type": "fake"}},
            "models": {"echo": {"provider": "fake"}}}
    with run_gateway(base, tmp_path_factory.mktemp("dims")) as gw:
        for user in ("<b>bob</b>", "alice", "z" * 200):  # the API allows 256
            r = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
                "model": "echo", "user": user,
                "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
        gw.on_server(gw.services.writer.flush())
        page = httpx.get(gw.url + "/ui/overview?range=24h", timeout=30)
        assert page.status_code == 200
        for dim in ("deployment", "key", "user"):
            assert f'id="by-{dim}"' in page.text
        users = page.text.split('id="by-user"')[1].split("</section>")[0]
        assert "&lt;b&gt;bob&lt;/b&gt;" in users and "<b>bob" not in users
        assert ">alice<" in users and "z" * 63 + "\u2026" in users and "z" * 64 not in users
        keys = page.text.split('id="by-key"')[1].split("</section>")[0]
        assert "(none)" in keys  # anonymous: no key
