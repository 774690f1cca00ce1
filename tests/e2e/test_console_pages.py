"""The console's Experiments, Collections and Jobs pages in a real headless
Chromium (Debian's, driven by Playwright): a canary rolled back from the
page sends the next API requests to the baseline; a document ingested over
the API is found from the Collections page's search box with its score; a
queued job and a batch show on the Jobs page."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.chromium import needs_chromium, signed_in
from tests.e2e.test_console import MASTER
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt"},
                   "gpt-next": {"provider": "oa", "model": "upstream-next"}},
        # Never judged by itself in this test (min_requests): only the button moves it.
        "experiments": {"rollout": {
            "model": "gpt-x", "kind": "canary", "sticky": "request",
            "canary": {"steps": [50, 100], "min_requests": 100_000},
            "variants": [{"name": "stable"}, {"name": "next", "model": "gpt-next"}]}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-pages")) as running:
        yield running


@pytest.fixture
def page(browser: Any, gw: Running) -> Iterator[Any]:
    with signed_in(browser, gw.url, MASTER) as pg:
        yield pg


def _api(gw: Running) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MASTER}"},
                        timeout=120)


def test_a_canary_rolled_back_from_the_page_sends_requests_to_the_baseline(
        page: Any, gw: Running) -> None:
    api = _api(gw)

    def arms(n: int) -> set[str]:
        out = set()
        for _ in range(n):
            r = api.post("/v1/chat/completions", json={
                "model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]})
            assert r.status_code == 200, r.text
            out.add(r.headers["x-seawall-experiment"])
        return out

    assert arms(40) == {"rollout=stable", "rollout=next"}  # 50% each
    page.goto(gw.url + "/ui/experiments")
    card = page.locator("section[data-experiment='rollout']")
    assert card.locator(".status").text_content() == "running"
    assert card.locator("tr[data-arm='next'] .weight").text_content() == "50.0%"
    page.once("dialog", lambda d: d.accept())
    card.locator("button:has-text('Roll back')").click()
    page.wait_for_selector("section[data-experiment='rollout'] .status:has-text('rolled back')")
    assert card.locator("tr[data-arm='next'] .weight").text_content() == "0.0%"
    assert card.locator("button:has-text('Roll back')").count() == 0  # nothing left to do
    assert "rolled back by hand (master)" in card.locator("table.history").text_content()
    assert arms(20) == {"rollout=stable"}
    # Audited, as every admin action.
    [event] = api.get("/admin/audit", params={"action": "experiment.rollback"}).json()["data"]
    assert event["target"] == "rollout" and event["after"]["status"] == "rolled_back"
    assert event["before"]["share"] == 50


def test_collections_page_searches_an_ingested_document(page: Any, gw: Running) -> None:
    name = "kb-" + uuid.uuid4().hex[:6]
    marker = "zeppelin" + uuid.uuid4().hex[:6]
    r = _api(gw).post(f"/v1/collections/{name}/documents", json={"documents": [
        {"source": "hangar.md", "text": f"# Hangar\n\nThe {marker} airship is kept in hangar "
                                        "nine, beside the old lighthouse."},
        {"source": "garden.md", "text": "# Garden\n\nTomatoes grow by the south wall."}]})
    assert r.status_code == 200, r.text
    page.goto(gw.url + "/ui/collections")
    row = page.locator(f"tr[data-collection='{name}']")
    assert row.locator("td").first.text_content() == "2"  # documents
    row.locator("button").click()
    page.wait_for_selector("#c-documents tbody tr:has-text('hangar.md')")
    page.fill("#c-query", f"where is the {marker} airship kept?")
    page.click("#c-search button[type=submit]")
    first = page.locator("#c-results tr.hit").first
    first.wait_for()
    assert marker in first.locator(".chunk-text").text_content()
    assert first.locator("td").nth(1).text_content() == "hangar.md"
    score = first.locator(".score").text_content()
    assert re.match(r"^\d+(\.\d+)? \(", score) and "bm25" in score, score


def test_jobs_page_shows_a_queued_job_and_a_batch(page: Any, gw: Running) -> None:
    job = gw.on_server(gw.services.jobs.enqueue(
        "sleep", {"seconds": 1}, tenant="acme", run_after=time.time() + 3600))
    api = _api(gw)
    line = ('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
            '{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}}\n')
    f = api.post("/v1/files", data={"purpose": "batch"},
                 files={"file": ("in.jsonl", line.encode())})
    assert f.status_code == 200, f.text
    b = api.post("/v1/batches", json={"input_file_id": f.json()["id"],
                                      "endpoint": "/v1/chat/completions",
                                      "completion_window": "24h"})
    assert b.status_code == 200, b.text
    page.goto(gw.url + "/ui/jobs")
    row = page.locator(f"tr[data-job='{job.id}']")
    assert row.locator(".state").text_content() == "queued"
    assert "acme" in row.text_content() and "0/" in row.text_content()
    batch = page.locator(f"tr[data-batch='{b.json()['id']}']")
    assert batch.count() == 1 and "/v1/chat/completions" in batch.text_content()
    page.select_option("#j-state", "queued")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"state=queued"))
    states = page.locator("#jobs .state").all_text_contents()
    assert states and set(states) == {"queued"}


def test_a_tenant_admin_session_cannot_see_every_tenants_jobs_or_experiments(
        gw: Running) -> None:
    made = httpx.post(gw.url + "/admin/keys", timeout=30,
                      headers={"authorization": f"Bearer {MASTER}"},
                      json={"name": f"acme-admin-{uuid.uuid4().hex[:6]}", "tenant": "acme",
                            "role": "tenant_admin"})
    assert made.status_code == 201, made.text
    client = httpx.Client(base_url=gw.url, timeout=30)  # signs in as that key
    client.get("/ui/signin")
    signed = client.post("/ui/signin", data={"csrf": client.cookies["sw_signin"],
                                             "key": made.json()["secret"], "next": "/ui/traces"})
    assert signed.status_code == 303, signed.text
    for path in ("/ui/jobs", "/ui/experiments"):
        r = client.get(path)
        assert r.status_code == 403 and "operator&#39;s only" in r.text, path
        assert "data-job" not in r.text and "data-experiment" not in r.text
    assert client.get("/ui/collections").status_code == 200
