"""The console's actions in a real headless Chromium (Debian's, driven by
Playwright): moving a prompt label forward, rotating a key (the new secret
shown once, the old one good for its grace only), changing a key's budget
(the next request over it is refused), the navigation by role and scopes,
and the drift charts over time. Each checks the outcome through the API as
a client sees it (the official openai SDK, httpx). Skipped only when
/usr/bin/chromium is absent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from seawall.observe.records import TraceRecord
from tests.e2e.chromium import needs_chromium, sign_in, signed_in
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = needs_chromium
MASTER = "sk-master-console-actions"
# Expensive on purpose: one short request costs about a cent.
PRICE = {"input_per_mtok": 1_000.0, "output_per_mtok": 1_000.0}
ALL_PAGES = {"overview", "traces", "playground", "keys", "prompts", "quality", "experiments",
             "collections", "jobs"}


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"gpt-x": {"provider": "oa", "model": "upstream-gpt", "price": PRICE}},
        # Drift rounds run when the test says (the first timed one is an hour away);
        # the SLOs once at start, then when the test says.
        "quality": {"interval_s": 3600,
                    "slos": [{"name": "avail", "kind": "availability", "objective": 0.99,
                              "period_s": 3600}],
                    "drift": {"interval_s": 3600, "embeddings": False, "min_samples": 10,
                              "sample": 40, "recent_s": 3600, "reference_s": 7200}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-actions")) as running:
        yield running


def _admin(gw: Running) -> httpx.Client:
    return httpx.Client(base_url=gw.url, timeout=30,
                        headers={"authorization": f"Bearer {MASTER}"})


def _make_key(gw: Running, **fields: Any) -> dict[str, Any]:
    r = _admin(gw).post("/admin/keys", json=fields)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _sdk(gw: Running, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0, timeout=30)


def _ask(gw: Running, secret: str, text: str = "hello") -> Any:
    return _sdk(gw, secret).chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": text}])


def _nav(pg: Any) -> set[str]:
    hrefs = [a.get_attribute("href") for a in pg.locator("header nav a").all()]
    return {h.removeprefix("/ui/") for h in hrefs}


def test_moving_a_label_forward_changes_the_version_the_next_request_gets(
        browser: Any, gw: Running) -> None:
    name = "answer-" + uuid.uuid4().hex[:6]
    prompts = gw.services.prompts
    for text in ("version one", "version two", "version three"):  # production stays on v1
        prompts.push(name, {"messages": [{"role": "system", "content": text}]}, labels=[])
    sdk = _sdk(gw, MASTER)

    def served() -> str:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-x", messages=[{"role": "user", "content": "hello"}],
            extra_body={"prompt": {"name": name}})
        return raw.headers["x-seawall-prompt-version"]

    assert served() == f"{name}@1"
    with signed_in(browser, gw.url, MASTER) as pg:
        pg.goto(gw.url + f"/ui/prompts/{name}")
        assert pg.locator("#moves tbody tr").count() == 1  # the first push set production
        row = pg.locator("#versions tr[data-version='3']")
        row.locator("select[name=label]").select_option("production")
        asked: list[str] = []

        def accept(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept()
        pg.once("dialog", accept)
        row.locator("button[data-move='3']").click()
        pg.wait_for_selector("#versions tr[data-version='3'] li[data-label='production']")
        assert "production from v1 to v3" in asked[0]
        # The label history shows the move, by the console, newest first.
        newest = pg.locator("#moves tbody tr").first.text_content()
        assert "production" in newest and "v1" in newest and "v3" in newest
        assert "console" in newest
    assert served() == f"{name}@3"
    audit = _admin(gw).get("/admin/audit", params={"action": "prompt.label"}).json()["data"]
    entry = next(e for e in audit if e["target"] == f"{name}:production")
    assert (entry["before"]["version"], entry["after"]["version"]) == (1, 3)


def test_rotating_a_key_shows_the_new_secret_once_and_the_old_one_ends_after_grace(
        browser: Any, gw: Running) -> None:
    made = _make_key(gw, name="rotate-me-" + uuid.uuid4().hex[:4], tenant="acme")
    old = made["secret"]
    with signed_in(browser, gw.url, MASTER) as pg:
        pg.goto(gw.url + "/ui/keys")
        row = pg.locator(f"tr[data-key='{made['id']}']")
        row.locator("details:has(summary:text-is('Rotate')) summary").click()
        row.locator("input[name=grace]").fill("15s")
        pg.once("dialog", lambda d: d.accept())
        row.locator("form[data-api-form$='/rotate'] button[type=submit]").click()
        pg.wait_for_selector("#rotated", state="visible")
        new = pg.input_value("#r-secret")
        assert new.startswith("sk-") and new != old
        assert made["id"] in pg.text_content("#rotated")
        rotated_at = time.monotonic()
        # Both secrets work within the grace period.
        assert _ask(gw, new, "with the new secret").choices[0].message.content
        old_status = httpx.post(gw.url + "/v1/chat/completions", timeout=30, headers={
            "authorization": f"Bearer {old}"}, json={
            "model": "gpt-x", "messages": [{"role": "user", "content": "old"}]}).status_code
        if time.monotonic() - rotated_at < 14:  # a very slow machine may be past it already
            assert old_status == 200
        # Shown once: a reload shows the prefix only.
        pg.reload()
        assert new not in pg.content() and pg.locator("#rotated").is_hidden()
        assert new[:10] in pg.text_content(f"tr[data-key='{made['id']}']")
    deadline = time.monotonic() + 60
    while True:
        try:
            _ask(gw, old, "old secret after grace")
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the old secret still works long after its grace"
        time.sleep(0.5)
    assert _ask(gw, new, "still good").choices[0].message.content


def test_a_budget_change_on_the_page_refuses_the_next_request_over_it(
        browser: Any, gw: Running) -> None:
    made = _make_key(gw, name="budgeted-" + uuid.uuid4().hex[:4], tenant="acme",
                     budget_usd=100.0, budget_period="day")
    _ask(gw, made["secret"], "spend a little")  # about a cent, well within $100
    with signed_in(browser, gw.url, MASTER) as pg:
        pg.goto(gw.url + "/ui/keys")
        row = pg.locator(f"tr[data-key='{made['id']}']")
        assert "$100.0000 / day" in row.locator("td.spend").text_content()
        row.locator("details:has(summary:text-is('Budget')) summary").click()
        row.locator("input[name=usd]").fill("0.0001")
        row.locator("select[name=period]").select_option("month")
        pg.once("dialog", lambda d: d.accept())
        row.locator("form[data-api-form$='/budget'] button[type=submit]").click()
        pg.wait_for_selector(f"tr[data-key='{made['id']}'] td.spend:has-text('$0.0001 / month')")
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(gw, made["secret"], "over budget now")
    assert refused.value.code == "budget_exceeded"
    shown = _admin(gw).get(f"/admin/keys/{made['id']}").json()
    assert (shown["budget_usd"], shown["budget_period"]) == (0.0001, "month")
    audit = _admin(gw).get("/admin/audit", params={"action": "key.budget"}).json()["data"]
    assert any(e["target"] == made["id"] for e in audit)


def test_a_tenant_admin_rotates_and_budgets_its_own_tenants_keys_only(
        browser: Any, gw: Running) -> None:
    admin = _make_key(gw, name="hooli-admin-" + uuid.uuid4().hex[:4], tenant="hooli",
                      role="tenant_admin")
    own = _make_key(gw, name="hooli-app-" + uuid.uuid4().hex[:4], tenant="hooli")
    other = _make_key(gw, name="acme-app-" + uuid.uuid4().hex[:4], tenant="acme")
    pg = sign_in(browser, gw.url, admin["secret"], start="/ui/signin?next=/ui/keys",
                 lands="/ui/keys")
    try:
        assert pg.locator(f"tr[data-key='{other['id']}']").count() == 0
        row = pg.locator(f"tr[data-key='{own['id']}']")
        row.locator("details:has(summary:text-is('Rotate')) summary").click()
        row.locator("input[name=grace]").fill("0s")
        pg.once("dialog", lambda d: d.accept())
        row.locator("form[data-api-form$='/rotate'] button[type=submit]").click()
        pg.wait_for_selector("#rotated", state="visible")
        assert _ask(gw, pg.input_value("#r-secret")).choices[0].message.content
        with pytest.raises(openai.AuthenticationError):  # no grace: the old one ends now
            _ask(gw, own["secret"])
        # The page's own calls act as the admin's key: another tenant's key is not found.
        for action, body in (("rotate", {}), ("budget", {"usd": 0})):
            status = pg.evaluate("""([url, body]) => fetch(url, {method: "POST",
                credentials: "same-origin", body: JSON.stringify(body),
                headers: {"content-type": "application/json", "x-csrf-token":
                  document.querySelector('meta[name="csrf-token"]').content}})
                .then(r => r.status)""", [f"/admin/keys/{other['id']}/{action}", body])
            assert status == 404, action
    finally:
        pg.close()
    assert _ask(gw, other["secret"]).choices[0].message.content  # untouched
    audit = _admin(gw).get("/admin/audit", params={"action": "key.rotate"}).json()["data"]
    entry = next(e for e in audit if e["target"] == own["id"])
    assert admin["name"] in str(entry)  # recorded as the tenant admin's key


def test_navigation_shows_only_what_the_identity_may_open(browser: Any, gw: Running) -> None:
    with signed_in(browser, gw.url, MASTER) as pg:
        assert _nav(pg) == ALL_PAGES
    admin = _make_key(gw, name="nav-admin-" + uuid.uuid4().hex[:4], tenant="initech",
                      role="tenant_admin")
    pg = sign_in(browser, gw.url, admin["secret"])
    try:
        assert _nav(pg) == ALL_PAGES - {"quality", "experiments", "jobs"}
        for hidden in ("quality", "experiments", "jobs"):  # still refused by URL
            assert pg.goto(gw.url + f"/ui/{hidden}").status == 403
            assert _nav(pg) == ALL_PAGES - {"quality", "experiments", "jobs"}
    finally:
        pg.close()
    narrow = _make_key(gw, name="keys-only-" + uuid.uuid4().hex[:4], tenant="initech",
                       role="tenant_admin", scopes=["admin:keys", "chat"])
    pg = sign_in(browser, gw.url, narrow["secret"], start="/ui/signin?next=/ui/keys",
                 lands="/ui/keys")
    try:
        assert _nav(pg) == {"playground", "keys"}
        assert pg.goto(gw.url + "/ui/traces").status == 403
        assert pg.goto(gw.url + "/ui/prompts").status == 403
        assert pg.goto(gw.url + "/ui/traces/some-other-tenants-trace").status == 403
    finally:
        pg.close()


def test_drift_and_slo_charts_have_a_point_per_evaluation_round(browser: Any,
                                                                 gw: Running) -> None:
    now = time.time()
    # A reference window of short answers, then a recent window of long ones.
    recs = [TraceRecord(
        trace_id=f"drift-{uuid.uuid4().hex}", endpoint="chat.completions",
        started_at=(now - 5000 if i < 40 else now - 900) + i, tenant="acme", model="gpt-x",
        deployment="gpt-x", status=200, latency_ms=40.0,
        input=[{"role": "user", "content": f"q {i}"}], output="an answer",
        prompt_tokens=10, completion_tokens=20 if i < 40 else 400,
        prompt_version="drifty@1") for i in range(80)]
    gw.on_server(gw.services.store.write_traces(recs))
    quality = gw.services.quality
    assert quality is not None
    with signed_in(browser, gw.url, MASTER) as pg:
        pg.goto(gw.url + "/ui/quality")
        assert pg.locator(".drift-chart").count() == 0
        gw.on_server(quality.evaluate_drift(send=False), timeout=120)
        gw.on_server(quality.evaluate_drift(send=False), timeout=120)
        pg.goto(gw.url + "/ui/quality")
        figure = pg.locator("figure.chart-card[data-group='gpt-x:drifty@1']")
        chart = figure.locator(".drift-chart[data-drawn='1']")
        chart.wait_for()
        assert chart.get_attribute("data-points") == "2"
        assert chart.locator("canvas").count() == 1
        assert "2 rounds, 2 drifted" in figure.text_content()
        # The points are drawn where the data puts them (the plot's own arrays).
        lowest = chart.evaluate("el => el.uplot.data[1]")
        assert len(lowest) == 2 and all(0 < p < 0.01 for p in lowest)
        # The SLO's burn rates: the round at start, and one more kept now.
        statuses = gw.on_server(quality.evaluate_slos(send=False))
        gw.on_server(quality.remember_slos(statuses, time.time()))
        pg.goto(gw.url + "/ui/quality")
        slo_chart = pg.locator("figure[data-slo='avail'] .slo-chart[data-drawn='1']")
        slo_chart.wait_for()
        assert slo_chart.get_attribute("data-points") == "2"
        assert slo_chart.evaluate("el => el.uplot.data.length") >= 3  # time, budget, a window
