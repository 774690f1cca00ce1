"""The console's Overview in a real headless Chromium (Debian's, driven by
Playwright), after real traffic through the gateway to the fake upstream:
the routing shares of a two-model route with the money saved against
sending everything to the strong model, and latency percentiles per key.
Skipped only when /usr/bin/chromium is absent."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from seawall.console.rollup import EDGES, bucket_of
from seawall.console.routes import _num, _pct, _usd
from tests.e2e.chromium import needs_chromium, open_browser, signed_in
from tests.e2e.test_console import MASTER
from tests.gateway import Running, run_gateway
from tests.servers import FakeUpstreamClient

pytestmark = needs_chromium
CHEAP = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}
STRONG = {"input_per_mtok": 5.0, "output_per_mtok": 15.0}
EASY = "What is the capital of France?"
# Code, math and a reasoning ask: the rules router sends this to the strong tier.
HARD = ("Prove step by step that this function terminates for every input, and derive "
        "its complexity as an equation $T(n) = 2T(n/2) + n$:\n```python\ndef f(n):\n"
        "    return n if n < 2 else f(n // 2) + f(n // 2)\n```")


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstreamClient, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Running]:
    config = {
        "auth": {"master_key": MASTER, "allow_anonymous_loopback": False},
        "observe": {"traces": {"flush_interval_s": 0.01}},
        "providers": {"oa": {"type": "openai", "base_url": upstream.base_url + "/v1"}},
        "models": {"cheap": {"provider": "oa", "model": "upstream-cheap", "price": CHEAP,
                             "cache": {"enabled": False}},
                   "strong": {"provider": "oa", "model": "upstream-strong", "price": STRONG,
                              "cache": {"enabled": False}}},
        "routes": {"auto": {"tiers": ["cheap", "strong"], "router": "rules",
                            "thresholds": [0.5]}},
    }
    with run_gateway(config, tmp_path_factory.mktemp("console-overview")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_browser(tmp_path_factory.mktemp("chromium-profile"), timeout_ms=30_000) as context:
        yield context


def _api(gw: Running, key: str = MASTER) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"},
                        timeout=60)


def _chat(gw: Running, key: str, model: str, text: str) -> None:
    r = _api(gw, key).post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text


def _cell(row: Any, i: int) -> str:
    return str(row.locator("td").nth(i).text_content()).strip()


def test_overview_shows_routing_shares_savings_and_percentiles_per_key(
        browser: Any, gw: Running) -> None:
    admin = _api(gw)
    made = admin.post("/admin/keys", json={"name": "overview-app"})
    assert made.status_code == 201, made.text
    key_id, secret = made.json()["id"], made.json()["secret"]
    for i in range(6):  # through the route: easy ones cheap, hard ones strong
        _chat(gw, secret, "auto", HARD if i % 3 == 0 else f"{EASY} ({i})")
    for i in range(5):  # straight to a model
        _chat(gw, MASTER, "cheap", f"{EASY} [{i}]")
    gw.on_server(gw.services.writer.flush())

    routed = admin.get("/admin/traces", params={"route": "auto", "limit": 200}).json()["data"]
    assert len(routed) == 6
    counts = {m: sum(r["model"] == m for r in routed) for m in ("cheap", "strong")}
    assert counts == {"cheap": 4, "strong": 2}  # the router's own decisions
    # All on the strong tier: the cheap requests' tokens at the strong price.
    cost = sum(r["cost_usd"] for r in routed)
    strong = sum(r["cost_usd"] if r["model"] == "strong" else
                 (r["prompt_tokens"] * STRONG["input_per_mtok"]
                  + r["completion_tokens"] * STRONG["output_per_mtok"]) / 1e6 for r in routed)
    assert strong > cost > 0

    with signed_in(browser, gw.url, MASTER) as page:
        page.goto(gw.url + "/ui/overview?range=1h")
        table = page.locator("#routing table")
        assert table.count() == 1
        caption = str(table.locator("caption").text_content())
        assert "auto" in caption and "6 requests" in caption
        assert f"saved {_usd(strong - cost)} ({_pct((strong - cost) / strong)})" in caption
        for model, tier in (("cheap", "cheapest"), ("strong", "strongest")):
            row = table.locator("tbody tr", has=page.locator(f"th:text-is('{model}')"))
            assert _cell(row, 0) == tier
            assert _cell(row, 1) == _pct(counts[model] / 6)
            assert _cell(row, 2) == str(counts[model])

        # The key's row: its latency percentiles, from its records.
        mine = admin.get("/admin/traces", params={"key_id": key_id}).json()["data"]
        assert len(mine) == 6
        lat = sorted(r["latency_ms"] for r in mine)
        ttft = sorted(r["ttft_ms"] or 0.0 for r in mine if r["ttft_ms"] is not None)

        def p(values: list[float], q: float) -> str:
            return _num(EDGES[bucket_of(values[max(1, math.ceil(q * len(values))) - 1])])

        row = page.locator("#by-key tbody tr", has=page.locator(f"th:text-is('{key_id}')"))
        assert row.count() == 1
        assert _cell(row, 0) == "6"
        assert [_cell(row, i) for i in (2, 3, 4)] == [p(lat, 0.5), p(lat, 0.95), p(lat, 0.99)]
        if ttft:
            assert _cell(row, 5) == p(ttft, 0.95)
        # The live panel (HTMX) renders the same table on its refresh.
        panel = page.request.get(gw.url + "/ui/overview?panel=1&range=1h")
        assert panel.status == 200 and 'id="routing"' in panel.text()
